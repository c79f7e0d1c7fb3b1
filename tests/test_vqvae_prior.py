"""The PixelCNN prior over VQ-VAE codes: samples decode to images in the data domain, sampled
codes follow the prior's probabilities, the VQ-VAE stays frozen, and the bounds add up."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import models
from models.vqvae import VQVAE

SMALL_PRIOR = dict(hidden_channels=8, num_layers=2, head_channels=16, embed_dim=4)



def small_vqvae(shape, levels=2, num_codes=8):
    return models.build("vqvae", shape, levels, num_codes=num_codes, code_dim=4, channels=16, res_channels=8, res_blocks=1)


def batch(shape, levels=2, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(levels, (n, *shape), generator=g).float() / (levels - 1)


@pytest.mark.parametrize("levels", [2, 4])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_samples_decode_to_images_of_the_right_shape_and_domain(levels, num_classes):
    torch.manual_seed(0)
    m = models.build("vqvae_prior", (1, 28, 28), levels, num_classes, vqvae=small_vqvae((1, 28, 28), levels), **SMALL_PRIOR)
    codes = m.sample_codes(6)
    assert codes.shape == (6, 7, 7) and codes.dtype == torch.long and 0 <= codes.min() and codes.max() < 8
    y = None if num_classes is None else torch.tensor([2, 1, 0, 2, 1, 0])
    noise = torch.rand(6, 1, 7, 7, generator=torch.Generator().manual_seed(1))
    drawn, means = m.sample(6, y, noise=noise), m.sample(6, y, mean=True, noise=noise)
    assert drawn.shape == means.shape == (6, 1, 28, 28)
    # the mean is the VQ-VAE's decoding of the codes these uniforms draw (kills a sample() that
    # decodes other codes, or ignores its noise or labels)
    codes = m.sample_codes(6, y, noise=noise)
    torch.testing.assert_close(means, m.vqvae.decode_codes(codes, mean=True))
    k = drawn * (levels - 1)
    assert torch.allclose(k, k.round(), atol=1e-5)  # drawn samples lie on the level grid


def test_sampled_codes_follow_the_prior():
    torch.manual_seed(0)
    vq = small_vqvae((1, 4, 2), num_codes=3)  # a 2x1 code grid: 9 code grids to enumerate
    m = models.build("vqvae_prior", (1, 4, 2), 2, vqvae=vq, **SMALL_PRIOR)
    assert m.code_shape == (2, 1)
    # fit the prior to grids whose second code mostly repeats the first: a dependent prior
    first = torch.randint(3, (256,))
    second = torch.where(torch.rand(256) < 0.7, first, torch.randint(3, (256,)))
    data = torch.stack([first, second], 1)[:, :, None]
    opt = torch.optim.Adam(m.prior.parameters(), 3e-2)
    for _ in range(150):
        loss = -m.code_log_prob(data).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    grids = torch.cartesian_prod(torch.arange(3), torch.arange(3)).reshape(9, 2, 1)
    with torch.no_grad():
        p = m.code_log_prob(grids).exp().double().numpy()
    assert abs(p.sum() - 1) < 1e-5 and p[[0, 4, 8]].sum() > 0.6
    n = 6000
    codes = m.sample_codes(n)
    counts = np.bincount((codes[:, 0, 0] * 3 + codes[:, 1, 0]).numpy(), minlength=9)
    assert stats.chisquare(counts, p / p.sum() * n).pvalue > 1e-3


def test_the_vqvae_stays_frozen_while_the_prior_trains():
    torch.manual_seed(0)
    vq = small_vqvae((1, 4, 4))
    vq.loss(batch((1, 4, 4)))  # a VQ-VAE with training state (k-means init done, step 1)
    m = models.build("vqvae_prior", (1, 4, 4), 2, vqvae=vq, **SMALL_PRIOR)
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    m.train()
    assert m.training and m.prior.training and not m.vqvae.training
    assert not any(p.requires_grad for p in m.vqvae.parameters())
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], 1e-2)
    x = batch((1, 4, 4), n=32)
    losses = []
    for _ in range(30):
        out = m.loss(x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-5:]) < sum(losses[:5]) - 5 * 0.05
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())
    assert {"loss", "nll_codes", "bits_per_code"} <= set(out)


def test_log_prob_is_the_code_prior_plus_the_reconstruction():
    torch.manual_seed(0)
    m = models.build("vqvae_prior", (1, 4, 4), 2, 3, vqvae=small_vqvae((1, 4, 4)), **SMALL_PRIOR).eval()
    x, y = batch((1, 4, 4), n=6), torch.arange(6) % 3
    codes = m.vqvae.encode_codes(x)
    with torch.no_grad():
        expected = m.code_log_prob(codes, y) + m.vqvae.recon_log_prob(x, codes)
        assert torch.allclose(m.log_prob(x, y), expected)
        # conditional: the label changes the prior's probability of the same codes
        assert not torch.allclose(m.code_log_prob(codes, y), m.code_log_prob(codes, (y + 1) % 3))
        assert torch.allclose(m.loss(x, y)["nll_codes"], -m.code_log_prob(codes, y).mean())


def test_the_checkpoint_holds_the_frozen_vqvae():
    m = models.build("vqvae_prior", (1, 2, 2), 2, vqvae=small_vqvae((1, 2, 2)), **SMALL_PRIOR)
    keys = m.state_dict().keys()
    assert any(k.startswith("vqvae.quantizer.") for k in keys) and any(k.startswith("prior.") for k in keys)


@pytest.mark.parametrize("shape", [(1, 2, 2), (1, 3, 3), (3, 2, 2)])
def test_builds_at_tiny_shapes_with_a_default_vqvae(shape):
    torch.manual_seed(0)
    m = models.build("vqvae_prior", shape, 2, **SMALL_PRIOR)
    assert isinstance(m.vqvae, VQVAE)
    x = batch(shape, n=4)
    assert m.log_prob(x).shape == (4,) and m.sample(3).shape == (3, *shape)


def test_a_mismatched_vqvae_is_refused():
    with pytest.raises(ValueError, match="trained on images"):
        models.build("vqvae_prior", (1, 28, 28), 2, vqvae=small_vqvae((1, 4, 4)))
    with pytest.raises(ValueError, match="levels"):
        models.build("vqvae_prior", (1, 4, 4), 256, vqvae=small_vqvae((1, 4, 4)))
    with pytest.raises(ValueError, match="VQ-VAE"):
        models.build("vqvae_prior", (1, 4, 4), 2, vqvae=torch.nn.Linear(2, 2))
