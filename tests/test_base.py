"""The model contract's defaults (models/base.py), checked on a toy autoregressive model that
overrides nothing but ``logits``: the level grid, bits per dimension, the default loss, the
default sampler against the naive one, progress frames, and the checks' messages."""
import math

import pytest
import torch
import torch.nn.functional as F

from models.base import AutoregressiveModel, GenerativeModel

SHAPE, L, K = (2, 1, 2), 3, 2   # two colours: the default order interleaves them pixel by pixel


class Toy(AutoregressiveModel):
    """Logits linear in the subpixels drawn before, in ``order()``, plus a class embedding."""

    def __init__(self, image_shape=SHAPE, levels=L, num_classes=K):
        super().__init__(image_shape, levels, num_classes)
        g = torch.Generator().manual_seed(0)
        d = self.num_dims
        rank = torch.empty(d, dtype=torch.long)
        rank[self.order()] = torch.arange(d)
        self.register_buffer("mask", (rank[None, :] < rank[:, None]).float())  # [i, j]: j drawn before i
        self.weight = torch.nn.Parameter(torch.randn(levels, d, d, generator=g) * 1.5)
        self.bias = torch.nn.Parameter(torch.randn(levels, d, generator=g))
        self.embed = torch.nn.Parameter(torch.randn(num_classes or 1, levels, d, generator=g) * 2)

    def logits(self, x, y=None):
        n = x.shape[0]
        flat = x.reshape(n, -1)
        out = torch.einsum("lij,nj->nli", self.weight * self.mask, flat) + self.bias
        if y is not None:
            w = y if y.is_floating_point() else F.one_hot(y, self.num_classes).float()
            out = out + torch.einsum("nk,kld->nld", w, self.embed)
        return out.reshape(n, self.levels, *self.image_shape)


def test_the_contracts_defaults():
    """Kills: the default levels 2 -> 3, one class refused (`<= 1`, `< 2`), the default
    ``loss_capturable`` of a latent model (False) or of an autoregressive one (True) flipped."""
    bare = GenerativeModel((1, 2, 3))
    assert (bare.levels, bare.num_classes, bare.num_dims) == (2, None, 6)
    assert GenerativeModel((1, 2, 3), 4, 1).num_classes == 1
    assert bare.loss_capturable() is False
    assert Toy().loss_capturable() is True


@pytest.mark.parametrize("args, message", [
    (((1, 2),), r"image_shape must be \(C, H, W\) with positive sizes, got \(1, 2\)"),
    (((1, 0, 2),), r"image_shape must be \(C, H, W\) with positive sizes, got \(1, 0, 2\)"),
    (((1, 2, 2), 1), "levels must be at least 2, got 1"),
    (((1, 2, 2), 2, 0), "num_classes must be a positive integer or None, got 0"),
])
def test_bad_contract_arguments_say_what_is_wrong(args, message):
    """Kills: `or` -> `and` in the shape check (a short shape or a zero side alone must fail),
    and each message replaced."""
    with pytest.raises(ValueError, match=message):
        GenerativeModel(*args)


def test_to_levels_rounds_and_clamps_to_the_grid():
    """Kills: either clamp bound dropped or moved to L + 1."""
    model = GenerativeModel((1, 1, 6), levels=4)
    x = torch.tensor([-0.4, 0.0, 0.16, 0.17, 1.0, 1.7]).view(1, 1, 1, 6)
    assert model.to_levels(x).flatten().tolist() == [0, 0, 0, 1, 3, 3]
    assert torch.equal(model.from_levels(model.to_levels(x)), torch.tensor([0, 0, 0, 1 / 3, 1, 1]).view(1, 1, 1, 6))


def test_bits_per_dim_divides_by_dims_and_log_2():
    """Kills: `*` for either `/`, log 3 for log 2."""
    model = GenerativeModel((3, 2, 5))
    nats = torch.tensor([0.0, 30 * math.log(2), 45 * math.log(2)])
    assert torch.allclose(model.bits_per_dim(nats), torch.tensor([0.0, 1.0, 1.5]))


def test_the_default_loss_is_the_mean_nll():
    """Kills: the "nll" key renamed."""
    model = Toy()
    x = torch.randint(0, L, (5, *SHAPE)).float() / (L - 1)
    y = torch.tensor([0, 1, 1, 0, 1])
    out = model.loss(x, y)
    nll = -model.log_prob(x, y).mean()
    assert set(out) == {"loss", "nll"}
    assert torch.equal(out["loss"], nll) and torch.equal(out["nll"], nll)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_the_default_sampler_is_the_naive_one(temperature):
    """The contract's default ``_sample_steps`` (a new model that writes only ``logits``) draws
    what ``sample_naive`` draws from the same noise, labels and temperature. Kills: the noise,
    labels or temperature not passed on."""
    model = Toy()
    noise = torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(1))
    y = torch.arange(64) % K
    fast = model.sample(64, y, noise=noise, temperature=temperature)
    assert torch.equal(fast, model.sample_naive(64, y, noise=noise, temperature=temperature))
    assert not torch.equal(fast, model.sample(64, 1 - y, noise=noise, temperature=temperature))
    other_t = model.sample(64, y, noise=noise, temperature=3 * temperature)
    assert not torch.equal(fast, other_t)
    assert not torch.equal(fast, model.sample(64, y, noise=noise.flip(0), temperature=temperature))


def test_progress_frames_by_default_are_every_subpixel_at_temperature_one():
    """Kills: the default temperature 1 -> 2, the default ``every`` 1 -> 2."""
    model = Toy()
    noise = torch.rand(32, *SHAPE, generator=torch.Generator().manual_seed(2))
    frames = list(model.sample_progress(32, noise=noise))
    assert [done for done, _ in frames] == list(range(1, model.num_dims + 1))
    assert torch.equal(frames[-1][1], model.sample(32, noise=noise))
    with pytest.raises(ValueError, match="every must be a positive number of subpixels, got 0"):
        next(model.sample_progress(2, every=0))


def test_bad_labels_and_noise_say_what_is_wrong():
    """Kills: each message replaced or wrapped (``XX...XX``: the whole message is matched)."""
    model = Toy()
    x = torch.zeros(3, *SHAPE)
    with pytest.raises(ValueError, match="^soft labels must be finite class weights$"):
        model.log_prob(x, torch.tensor([[0.5, math.nan]] * 3))
    with pytest.raises(ValueError, match=r"^y must have shape \(3,\), got \(2,\)$"):
        model.log_prob(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"^noise must have shape \(2, 2, 1, 2\), got \(2, 1, 1, 2\)$"):
        model.sample(2, noise=torch.rand(2, 1, 1, 2))
