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
    # the fresh VQ-VAE is built for the prior's levels (kills it built with its own default)
    assert models.build("vqvae_prior", shape, 4, **SMALL_PRIOR).vqvae.levels == 4


def test_a_mismatched_vqvae_is_refused():
    with pytest.raises(ValueError, match="trained on images"):
        models.build("vqvae_prior", (1, 28, 28), 2, vqvae=small_vqvae((1, 4, 4)))
    with pytest.raises(ValueError, match="levels"):
        models.build("vqvae_prior", (1, 4, 4), 256, vqvae=small_vqvae((1, 4, 4)))
    with pytest.raises(ValueError) as refused:
        models.build("vqvae_prior", (1, 4, 4), 2, vqvae=torch.nn.Linear(2, 2))
    assert str(refused.value) == "vqvae must be a built VQ-VAE model (models.build('vqvae', ...)), got Linear"


def test_every_hyper_parameter_reaches_the_pixelcnn():
    """The prior is the PixelCNN that ``models.build("pixelcnn", ...)`` makes from the same
    hyper-parameters, parameter for parameter. Kills num_layers, kernel_size, first_kernel_size
    or embed_dim left at the PixelCNN's default."""
    hp = dict(hidden_channels=6, num_layers=3, kernel_size=5, first_kernel_size=5, head_channels=10, embed_dim=3)
    m = models.build("vqvae_prior", (1, 8, 8), 2, 3, vqvae=small_vqvae((1, 8, 8), num_codes=5), **hp)
    alone = models.build("pixelcnn", (1, *m.code_shape), 5, 3, gated=True, embed_levels=True, **hp)
    assert {k: v.shape for k, v in m.prior.state_dict().items()} == {k: v.shape for k, v in alone.state_dict().items()}


# -- found by mutation testing (mutmut run "models.vqvae_prior*") --------------------------
def _random_conditional_prior(shape=(1, 4, 2)):
    """A 2x1 code grid (2x2 for an 8x8 ``shape``) with 3 codes and 3 classes, every parameter of
    the prior random (a fresh class embedding is zero, which would hide a dropped label)."""
    torch.manual_seed(0)
    m = models.build("vqvae_prior", shape, 2, 3, vqvae=small_vqvae(shape, num_codes=3), **SMALL_PRIOR)
    with torch.no_grad():
        for p in m.prior.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return m.eval()


def test_sampled_codes_invert_the_tempered_class_conditionals():
    """Each code is the inverse CDF, at its uniform, of p(code_i | codes before, y) ** (1/T),
    computed by enumerating the 9 grids with code_log_prob. Kills sample_codes dropping the
    labels or the temperature, or passing no noise."""
    m = _random_conditional_prior()
    grids = torch.cartesian_prod(torch.arange(3), torch.arange(3)).reshape(9, 2, 1)
    u = torch.rand(200, 1, 2, 1, generator=torch.Generator().manual_seed(1))
    for label, temperature in ((0, 1.0), (2, 1.0), (2, 0.6)):
        y = torch.full((200,), label)
        with torch.no_grad():
            joint = m.code_log_prob(grids, torch.full((9,), label)).exp().double().view(3, 3)

        def draw(p, v):  # the inverse CDF of p ** (1/T), as layers.inverse_cdf takes it
            q = p ** (1 / temperature)
            return int((torch.cumsum(q / q.sum(), 0) < v).sum().clamp(max=2))

        expected = []
        for v0, v1 in u[:, 0, :, 0].double().tolist():
            c0 = draw(joint.sum(1), v0)
            expected.append([c0, draw(joint[c0], v1)])
        codes = m.sample_codes(200, y, temperature=temperature, noise=u)
        assert codes[:, :, 0].tolist() == expected, (label, temperature)


def test_partial_decoding_shows_exactly_the_codes_drawn():
    """decode_partial(codes, done) decodes the codebook vectors of the first ``done`` positions
    (raster order) and zero vectors elsewhere; with done = h*w it is the full decoding. Kills
    `< done` -> `<= done`, a division by the mask, a wrong mask shape, and a default of drawn
    samples instead of the mean."""
    m = _random_conditional_prior()
    codes = torch.tensor([[[1], [2]], [[0], [1]]])
    z = m.vqvae.quantizer.lookup(codes)
    torch.testing.assert_close(m.decode_partial(codes, 2), m.vqvae.decode_codes(codes, mean=True))
    keep_first = z * torch.tensor([1.0, 0.0]).view(1, 1, 2, 1)
    with torch.no_grad():
        torch.testing.assert_close(m.decode_partial(codes, 1),
                                   m.vqvae.likelihood.mean(m.vqvae.decoder(keep_first).float()))
        torch.testing.assert_close(m.decode_partial(codes, 0),
                                   m.vqvae.likelihood.mean(m.vqvae.decoder(torch.zeros_like(z)).float()))


@pytest.mark.parametrize("shape", [(1, 4, 2), (1, 8, 8)])
def test_progress_frames_hold_the_codes_drawn_so_far_and_end_at_the_sample(shape):
    """With ``codes=True`` the frame after ``done`` codes holds the final codes at the first
    ``done`` raster positions and -1 after them; the default (one frame a code, decoded means)
    ends at sample(mean=True) from the same noise, labels and temperature, and without a
    temperature at the exact sample (T = 1). Kills mutants of the -1 fill, of the position test
    (``h / w`` for ``h * w``, which a 2x1 grid cannot tell), of the noise, labels (other than
    the classes in turn that a prior given none draws) or temperature passed on, and of the
    default temperature."""
    m = _random_conditional_prior(shape)
    h, w = m.code_shape
    y, u = (torch.arange(60) + 1) % 3, torch.rand(60, 1, h, w, generator=torch.Generator().manual_seed(2))
    final = m.sample_codes(60, y, temperature=0.4, noise=u)
    assert not torch.equal(final, m.sample_codes(60, y, noise=u))  # the temperature matters here
    assert not torch.equal(final, m.sample_codes(60, None, temperature=0.4, noise=u))  # so do the labels
    frames = list(m.sample_progress(60, y, noise=u, temperature=0.4, codes=True))
    assert [done for done, _ in frames] == list(range(1, h * w + 1))
    for done, grid in frames:
        flat, want = grid.flatten(1), final.flatten(1)
        assert torch.equal(flat[:, :done], want[:, :done]) and (flat[:, done:] == -1).all()
    images = list(m.sample_progress(60, y, noise=u, temperature=0.4))
    torch.testing.assert_close(images[-1][1], m.sample(60, y, noise=u, temperature=0.4, mean=True))
    exact = list(m.sample_progress(60, y, noise=u, codes=True))[-1][1]
    assert torch.equal(exact, m.sample_codes(60, y, temperature=1.0, noise=u))
    drawn = list(m.sample_progress(60, y, noise=u, mean=False))[-1][1]
    assert set(drawn.unique().tolist()) <= {0.0, 1.0}  # mean=False passed on: binary draws


def test_the_prior_is_a_gated_pixelcnn_with_level_embeddings():
    """The VQ-VAE paper's prior over codes is the gated PixelCNN; codes are categories, so they
    enter through an embedding, not as grey values. Kills `gated=False` and `embed_levels=False`."""
    from models.pixelcnn import GatedStack, InputEncoder

    m = _random_conditional_prior()
    assert any(isinstance(mod, GatedStack) for mod in m.prior.modules())
    assert [mod.embedding is not None for mod in m.prior.modules() if isinstance(mod, InputEncoder)] == [True]


def test_bits_per_code_is_the_code_nll_over_positions_and_log_2():
    """Kills `/` -> `*` in bits_per_code, and `h / w` for `h * w` (a 2x2 grid: a 2x1 one cannot
    tell): nats per image / (h w ln 2)."""
    m = _random_conditional_prior((1, 8, 8))
    assert m.code_shape == (2, 2)
    x, y = batch((1, 8, 8), n=6), torch.arange(6) % 3
    with torch.no_grad():
        out = m.loss(x, y)
    assert out["bits_per_code"].item() == pytest.approx(out["nll_codes"].item() / (4 * np.log(2)), rel=1e-6)
