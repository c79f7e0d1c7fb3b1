"""Sampling temperature of the autoregressive models: T = 1 is exactly the untempered sampler,
a small T concentrates the samples (lower entropy, greedy as T -> 0), and samples at T follow
the product of the conditionals softmax(logits / T) (a chi-square test on tiny models)."""
import pytest
import torch

from models.layers import inverse_cdf
from tests.properties import TINY_HPARAMS, assert_samples_match, tiny_autoregressive

MIXTURES = ["pixelcnn_mixture", "row_lstm_mixture", "diagonal_bilstm_mixture"]
KINDS = list(TINY_HPARAMS) + ["ar", *MIXTURES]


def build(kind, shape=(1, 2, 2), levels=4, std=1.0, **hp):
    if kind == "ar":
        return _ar(shape, levels)
    if kind in MIXTURES:  # T tempers the mixture itself (its logits and scales), not the levels' logits
        return tiny_autoregressive(kind.removesuffix("_mixture"), shape, levels, std=std / 2, output="logistic_mixture", mixtures=2)
    return tiny_autoregressive(kind, shape, levels, std=std, **hp)


def _ar(shape, levels):
    import models

    torch.manual_seed(0)
    model = models.build("ar", shape, levels, p=2)
    with torch.no_grad():
        model.phi.normal_(0, 1.0)
        model.c.fill_(0.3)  # not halfway between two levels, where the greedy choice is a tie
    return model.eval()


def untempered_reference(model, noise):
    """Today's sampler, written out: subpixel by subpixel, inverse_cdf on the raw logits."""
    n = noise.shape[0]
    x = torch.zeros(n, model.num_dims)
    for i in model.order().tolist():
        logits = model.logits(x.view(n, *model.image_shape))
        li = logits.reshape(n, -1)[:, i] if model.levels == 2 else logits.reshape(n, model.levels, -1)[:, :, i]
        x[:, i] = model.from_levels(inverse_cdf(li, noise.reshape(n, -1)[:, i], model.levels))
    return x.view(n, *model.image_shape)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape,levels", [((3, 2, 2), 4), ((1, 3, 3), 2)])
def test_temperature_one_is_the_untempered_sampler(kind, shape, levels):
    model = build(kind, shape, levels)
    noise = torch.rand(32, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = untempered_reference(model, noise)
    assert torch.equal(model.sample(32, noise=noise, temperature=1.0), reference)
    assert torch.equal(model.sample(32, noise=noise), reference)
    assert torch.equal(model.sample_naive(32, noise=noise, temperature=1.0), reference)


@pytest.mark.parametrize("kind", [*TINY_HPARAMS, "ar", "pixelcnn_mixture"])
def test_small_temperature_lowers_the_entropy_and_tends_to_greedy(kind):
    model = build(kind, (1, 3, 3), 4)
    torch.manual_seed(0)

    def entropy(t):
        """Mean entropy (nats) of the conditionals the sampler drew from, along its samples."""
        xs = model.sample(200, temperature=t)
        with torch.no_grad():
            logits, rest = model.sampling_logits(xs, None, t)
        logp = torch.log_softmax(logits.double() / rest, dim=1)
        return -(logp.exp() * logp).sum(1).mean().item()

    assert entropy(0.3) < 0.75 * entropy(1.0)
    noise_a, noise_b = torch.rand(2, 16, *model.image_shape)
    greedy = model.sample(16, noise=noise_a, temperature=1e-6)
    assert torch.equal(greedy, model.sample(16, noise=noise_b, temperature=1e-6)), "T -> 0 is not deterministic"
    assert torch.equal(model.sample_naive(16, noise=noise_b, temperature=1e-6), greedy)


@pytest.mark.parametrize("kind", ["fvsbn", "nade", "pixelcnn", "row_lstm", "ar", *MIXTURES])
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_samples_at_temperature_follow_the_tempered_conditionals(kind, temperature):
    assert_samples_match(build(kind, (1, 2, 2), 4, std=0.5), n=8000, temperature=temperature)


@pytest.mark.parametrize("kind", ["fvsbn", *MIXTURES])
def test_fast_sampler_equals_naive_at_a_temperature(kind):
    """Kills the temperature dropped from a PixelRNN's mixture sampler or from its
    ``sampling_logits`` (where the mixture branch is skipped, the levels' logits are divided)."""
    model = build(kind, (3, 2, 2), 4)
    noise = torch.rand(64, 3, 2, 2)
    assert torch.equal(model.sample(64, noise=noise, temperature=0.7), model.sample_naive(64, noise=noise, temperature=0.7))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_temperature_must_be_positive(bad):
    model = build("fvsbn")
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        next(model.sample_progress(2, temperature=bad))


def test_vae_temperature_scales_the_prior():
    import models

    torch.manual_seed(0)
    model = models.build("vae", (1, 4, 4), 2, latent_dim=2, arch="mlp", hidden=8).eval()
    torch.manual_seed(1)
    a = model.sample(8, mean=True)
    torch.manual_seed(1)
    assert torch.equal(model.sample(8, mean=True, temperature=1.0), a)
    torch.manual_seed(1)
    z = torch.randn(8, 2)
    torch.manual_seed(1)
    assert torch.equal(model.sample(8, mean=True, temperature=0.5), model.sample(8, z=0.5 * z, mean=True))
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=0)


def test_a_uniform_just_below_one_draws_a_valid_level():
    """In float32 the CDF of 256 levels often ends below the largest uniform torch.rand gives
    (1 - 2^-24): the draw must still be a level, the last. Kills the clamp at L + 1."""
    torch.manual_seed(0)
    logits = torch.randn(4000, 256) * 3
    assert (torch.softmax(logits, -1).cumsum(-1)[:, -1] < 1 - 2**-24).any(), "no CDF ends short of the uniform"
    draws = inverse_cdf(logits, torch.full((4000,), 1 - 2**-24), 256)
    assert draws.max() == 255
