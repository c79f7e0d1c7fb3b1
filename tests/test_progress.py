"""Progress frames of the autoregressive samplers (``sample_progress``): frames come after
every ``every`` subpixels in generation order and at the end, each differs from the previous
only in the subpixels generated since (the rest still 0), and the last is ``sample`` from the
same noise. Also the VQ-VAE prior's progress over its code grid."""
import pytest
import torch

import models
from tests.properties import TINY_HPARAMS, tiny_autoregressive
from tests.test_temperature import build

KINDS = list(TINY_HPARAMS) + ["ar", "pixelcnn_mixture"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("every", [1, 5])
def test_frames_follow_the_generation_order_and_end_in_the_sample(kind, every):
    model = build(kind, (3, 2, 2), 4)
    noise = torch.rand(8, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    frames = list(model.sample_progress(8, noise=noise, temperature=0.8, every=every))
    d = model.num_dims
    assert [done for done, _ in frames] == sorted(set(list(range(every, d + 1, every)) + [d]))
    order = model.order()
    previous, prev_done = torch.zeros(8, d), 0
    for done, x in frames:
        assert x.shape == (8, 3, 2, 2)
        flat = x.reshape(8, d)
        changed = (flat != previous).any(0).nonzero().flatten().tolist()
        assert set(changed) <= set(order[prev_done:done].tolist())
        assert (flat[:, order[done:]] == 0).all()
        previous, prev_done = flat.clone(), done
    assert torch.equal(frames[-1][1], model.sample(8, noise=noise, temperature=0.8))


def test_frames_are_copies():
    model = build("fvsbn", (1, 3, 3), 2)
    frames = list(model.sample_progress(4, every=1))
    assert len({f.data_ptr() for _, f in frames}) == len(frames)
    assert not torch.equal(frames[0][1], frames[-1][1]) or frames[-1][1].sum() == 0


def test_made_with_several_masks_draws_each_image_in_its_own_order():
    model = tiny_autoregressive("made", (1, 3, 3), 2, num_masks=3)
    noise = torch.rand(12, 1, 3, 3)
    torch.manual_seed(5)
    frames = list(model.sample_progress(12, noise=noise))
    torch.manual_seed(5)
    assert torch.equal(frames[-1][1], model.sample(12, noise=noise))
    previous = torch.zeros(12, 9)
    for done, x in frames:  # one new subpixel per image per step, wherever its order puts it
        changed = (x.reshape(12, 9) != previous).sum(1)
        assert (changed <= 1).all()
        previous = x.reshape(12, 9)


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every"):
        next(build("fvsbn").sample_progress(2, every=0))


def test_vqvae_prior_progress_over_the_code_grid():
    torch.manual_seed(0)
    vq = models.build("vqvae", (1, 8, 8), 2, num_codes=6, code_dim=4, channels=8, res_channels=4, res_blocks=1)
    model = models.build("vqvae_prior", (1, 8, 8), 2, vqvae=vq, hidden_channels=8, num_layers=1,
                         head_channels=8, first_kernel_size=3).eval()
    h, w = model.code_shape
    noise = torch.rand(3, 1, h, w)
    grids = list(model.sample_progress(3, noise=noise, every=2, codes=True))
    assert grids[-1][0] == h * w
    assert torch.equal(grids[-1][1], model.sample_codes(3, noise=noise))
    for done, codes in grids:
        assert (codes.flatten(1)[:, done:] == -1).all() and (codes.flatten(1)[:, :done] >= 0).all()
    images = list(model.sample_progress(3, noise=noise, every=h * w))
    assert len(images) == 1 and images[0][1].shape == (3, 1, 8, 8)
    assert torch.equal(images[0][1], model.sample(3, noise=noise, mean=True))
