"""VAE and conditional VAE: the KL and likelihood formulas, the IWAE bound, gradients through
the reparameterisation, KL warm-up state, conditioning, and training at tiny shapes."""
from __future__ import annotations

import math

import pytest
import torch

import models
from models.vae import Likelihood, discretized_logistic_log_prob, gaussian_kl, standard_normal_log_prob
from tests.properties import all_images

TINY = [(1, 2, 2), (1, 3, 3), (3, 2, 2)]



def batch(shape, levels, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(levels, (n, *shape), generator=g).float() / (levels - 1)


def test_kl_closed_form_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4) * 0.5
    eps = torch.randn(200_000, 3, 4)
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q = standard_normal_log_prob(eps) - 0.5 * logvar.sum(-1)
    terms = log_q - standard_normal_log_prob(z)                 # (S, 3)
    mc, stderr = terms.mean(0), terms.std(0) / math.sqrt(len(terms))
    assert torch.all((mc - gaussian_kl(mu, logvar)).abs() < 4 * stderr + 1e-3)


def test_standard_normal_log_prob_is_the_log_density():
    """Kills `+ log 2 pi` -> `-` (it cancels in the KL and in the IWAE weights, so only the value
    itself tells)."""
    z = torch.randn(5, 3)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(standard_normal_log_prob(z), ref)


def test_kl_is_zero_only_at_the_prior():
    assert gaussian_kl(torch.zeros(5), torch.zeros(5)).item() == 0.0
    assert gaussian_kl(torch.full((5,), 0.1), torch.zeros(5)).item() > 0


@pytest.mark.parametrize("kind,levels", [("bce", 2), ("logistic", 3), ("categorical", 3), ("logistic", 2)])
def test_discrete_likelihoods_are_normalised(kind, levels):
    torch.manual_seed(0)
    shape = (1, 2, 2)
    lik = Likelihood(kind, shape[0], levels)
    out = torch.randn(1, lik.out_channels, *shape[1:]) * 2
    x = all_images(shape, levels)
    total = torch.logsumexp(lik.log_prob(out.expand(len(x), -1, -1, -1), x), 0).exp().item()
    assert abs(total - 1) < 1e-5


def test_discretised_logistic_matches_cdf_differences():
    torch.manual_seed(0)
    levels = 5
    x = torch.randint(levels, (1000,)).double() / (levels - 1)
    loc, log_scale = torch.rand(1000).double(), torch.rand(1000).double() * 2 - 2.5
    h, s = 0.5 / (levels - 1), torch.exp(log_scale)
    upper = torch.where(x >= 1, torch.ones_like(x), torch.sigmoid((x + h - loc) / s))
    lower = torch.where(x <= 0, torch.zeros_like(x), torch.sigmoid((x - h - loc) / s))
    assert torch.allclose(discretized_logistic_log_prob(x, loc, log_scale, levels), torch.log(upper - lower), atol=1e-9)


def test_continuous_likelihoods_are_the_gaussian_and_laplace_densities():
    torch.manual_seed(0)
    out, x = torch.rand(4, 1, 3, 3), torch.rand(4, 1, 3, 3)
    gauss, laplace = Likelihood("mse", 1, 256, sigma=0.2), Likelihood("mae", 1, 256, sigma=0.3)
    ref_g = torch.distributions.Normal(out, 0.2).log_prob(x).flatten(1).sum(1)
    ref_l = torch.distributions.Laplace(out, 0.3).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(gauss.log_prob(out, x), ref_g, atol=1e-4)
    assert torch.allclose(laplace.log_prob(out, x), ref_l, atol=1e-4)


def test_learned_sigma_is_a_parameter():
    m = models.build("vae", (1, 2, 2), 256, likelihood="mse", learn_sigma=True)
    assert any(p is m.likelihood.log_sigma for p in m.parameters())
    m = models.build("vae", (1, 2, 2), 256, likelihood="mse")
    assert all(p is not m.likelihood.log_sigma for p in m.parameters())


def test_default_likelihoods_and_bce_needs_binary_data():
    assert models.build("vae", (1, 2, 2), 2).likelihood.kind == "bce"
    assert models.build("vae", (1, 2, 2), 256).likelihood.kind == "logistic"
    with pytest.raises(ValueError, match="levels=2"):
        models.build("vae", (1, 2, 2), 256, likelihood="bce")
    with pytest.raises(ValueError):
        models.build("vae", (1, 2, 2), 2, likelihood="poisson")


def test_iwae_bound_rises_with_k_and_elbo_stays_below():
    torch.manual_seed(0)
    m = models.build("vae", (1, 4, 4), 2, arch="mlp", latent_dim=2, hidden=32).eval()
    with torch.no_grad():
        m.decoder[0][0].weight.mul_(8.0)  # a decoder that depends strongly on z ...
        m.encoder[-1].bias[:2] += 1.0      # ... and a q(z|x) away from the true posterior
    x = batch((1, 4, 4), 2, n=32).repeat(40, 1, 1, 1)  # repeats average out the sampling noise
    with torch.no_grad():
        bounds = {k: m.log_prob(x, samples=k).mean().item() for k in (1, 4, 32)}
        elbo = m.loss(x)["elbo"].item()  # analytic KL: the K = 1 bound in expectation
    assert abs(bounds[1] - elbo) < 0.25
    assert elbo < bounds[4] - 0.2 and bounds[4] < bounds[32] - 0.2


def test_log_prob_default_uses_iw_samples_and_chunks_agree():
    torch.manual_seed(0)
    m = models.build("vae", (1, 3, 3), 2, latent_dim=2, iw_samples=8).eval()
    x = batch((1, 3, 3), 2, n=4).repeat(500, 1, 1, 1)
    with torch.no_grad():
        whole = m.log_prob(x).mean()
        m._chunk_elements = 9 * 4 * 500 * 3  # 3 samples per chunk
        chunked = m.log_prob(x).mean()
    assert abs(whole - chunked) < 0.02


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_gradients_reach_the_encoder_through_the_reparameterisation(arch):
    torch.manual_seed(0)
    m = models.build("vae", (1, 4, 4), 2, arch=arch, beta=0.0)  # no KL: z is the only path
    m.loss(batch((1, 4, 4), 2))["loss"].backward()
    for name, p in m.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_kl_warmup_counts_training_steps_in_a_buffer():
    torch.manual_seed(0)
    m = models.build("vae", (1, 2, 2), 2, beta=2.0, kl_warmup_steps=4)
    x = batch((1, 2, 2), 2)
    weights = [m.loss(x)["beta"].item() for _ in range(6)]
    assert weights == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    m.eval()
    m.loss(x)
    assert m.steps.item() == 6  # evaluation does not count
    resumed = models.build("vae", (1, 2, 2), 2, beta=2.0, kl_warmup_steps=4)
    resumed.load_state_dict(m.state_dict())
    assert resumed.kl_weight() == 2.0


def test_loss_reports_elbo_and_its_parts():
    torch.manual_seed(0)
    m = models.build("vae", (1, 3, 3), 2)
    out = m.loss(batch((1, 3, 3), 2))
    assert {"loss", "elbo", "recon", "kl", "beta"} <= set(out)
    assert all(v.dim() == 0 for v in out.values())
    assert torch.isclose(out["elbo"], -(out["recon"] + out["kl"]))
    assert torch.isclose(out["loss"], out["recon"] + out["kl"])  # beta 1, no warm-up


@pytest.mark.parametrize("name", ["vae", "cvae"])
@pytest.mark.parametrize("arch", ["conv", "mlp"])
@pytest.mark.parametrize("shape", TINY)
def test_builds_at_tiny_shapes_and_loss_decreases(name, arch, shape):
    torch.manual_seed(0)
    classes = 3 if name == "cvae" else None
    m = models.build(name, shape, 4, classes, arch=arch, hidden=32, channels=8)
    x, y = batch(shape, 4, n=32), (torch.arange(32) % 3 if classes else None)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    losses = []
    for _ in range(40):
        loss = m.loss(x, y)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < sum(losses[:5]) - 5 * 0.5
    assert m.log_prob(x, y).shape == (32,)


@pytest.mark.parametrize("likelihood,levels", [("bce", 2), ("logistic", 4), ("categorical", 4), ("mse", 4), ("mae", 4)])
def test_draws_lie_on_the_grid_and_agree_with_the_reported_mean(likelihood, levels):
    """Kills a sampler or mean that ignores the decoder's output (a constant, a wrong sigmoid or
    softmax axis, a draw off the level grid): draws from one z lie on the grid, and for a
    probability mass their average is the mean the model reports; for mse/mae the mean (the
    clamped location) is the most likely image in [0, 1] (shifting it lowers log p)."""
    torch.manual_seed(0)
    m = models.build("vae", (3, 2, 2), levels, likelihood=likelihood).eval()
    with torch.no_grad():
        z = torch.randn(3, m.latent_dim) * 2
        mean = m.decode(z, mean=True)
        n = 4000
        draws = m.decode(z.repeat_interleave(n, 0), mean=False).view(3, n, 3, 2, 2)
        k = draws * (levels - 1)
        assert torch.allclose(k, k.round(), atol=1e-5) and k.min() >= 0 and k.max() <= levels - 1
        if likelihood in ("mse", "mae"):
            out = m._decode(z, None)
            best = m.likelihood.log_prob(out, mean)
            for shift in (-0.05, 0.05):
                assert (m.likelihood.log_prob(out, (mean + shift).clamp(0, 1)) <= best + 1e-6).all()
        else:
            assert (draws.mean(1) - mean).abs().max() < 5 * 0.5 / n ** 0.5  # 5 sigma of a [0, 1] variable


@pytest.mark.parametrize("kind", ["logistic", "categorical"])
def test_mean_is_the_expectation_of_the_observation_model(kind):
    torch.manual_seed(0)
    levels = 6
    lik = Likelihood(kind, 1, levels)
    out = torch.randn(8, lik.out_channels, 1, 1) * 2  # one subpixel per image
    p = torch.stack([lik.log_prob(out, torch.full((8, 1, 1, 1), k / (levels - 1))).exp() for k in range(levels)])
    expected = (p * torch.arange(levels)[:, None] / (levels - 1)).sum(0)
    assert torch.allclose(lik.mean(out).flatten(), expected, atol=1e-5)


def test_encode_and_decode_for_interpolation():
    torch.manual_seed(0)
    m = models.build("vae", (1, 28, 28), 2, latent_dim=8)
    mu, logvar = m.encode(batch((1, 28, 28), 2, n=2))
    assert mu.shape == logvar.shape == (2, 8)
    path = torch.stack([mu[0] + t * (mu[1] - mu[0]) for t in torch.linspace(0, 1, 5)])
    images = m.decode(path)
    assert images.shape == (5, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_cvae_needs_labels():
    with pytest.raises(ValueError, match="num_classes"):
        models.build("cvae", (1, 2, 2), 2)
    m = models.build("cvae", (1, 2, 2), 2, 3)
    with pytest.raises(ValueError, match="pass y"):
        m.loss(batch((1, 2, 2), 2))


def test_cvae_samples_change_with_y_and_not_with_batch_order():
    torch.manual_seed(0)
    m = models.build("cvae", (1, 4, 4), 2, 5, hidden=32, channels=8)
    z, y = torch.randn(10, m.latent_dim), torch.arange(10) % 5
    base = m.sample(10, y, z=z, mean=True)
    other = m.sample(10, (y + 1) % 5, z=z, mean=True)
    assert (base - other).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # every image depends on y
    perm = torch.randperm(10)
    assert torch.allclose(m.sample(10, y[perm], z=z[perm], mean=True), base[perm], atol=1e-6)
    # drawn samples: the same seed and the same labels give the same images; labels in turn by default
    torch.manual_seed(1)
    a = m.sample(10, y)
    torch.manual_seed(1)
    assert torch.equal(a, m.sample(10))


def test_cvae_log_prob_is_conditional():
    torch.manual_seed(0)
    m = models.build("cvae", (1, 3, 3), 2, 4).eval()
    x = batch((1, 3, 3), 2, n=8)
    with torch.no_grad():
        a, b = m.log_prob(x, torch.zeros(8, dtype=torch.long)), m.log_prob(x, torch.ones(8, dtype=torch.long))
    assert a.shape == (8,) and not torch.allclose(a, b)


# -- from mutation testing of models/vae.py (each test names the mutants it kills) ---------------
class _Recorder(torch.nn.Module):
    """A decoder that records the latents it is given and outputs zeros of ``shape``."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.seen = shape, []

    def forward(self, z):
        self.seen.append(z.detach().clone())
        return torch.zeros(len(z), *self.shape)


def _fixed_posterior(m, mu, logvar):
    """Make an MLP encoder output (mu, logvar) for every input: zero weights, the bias set."""
    last = m.encoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([*mu, *logvar]))


def test_the_reparameterised_latents_have_the_encoders_mean_and_standard_deviation():
    """z = mu + exp(logvar / 2) eps in ``loss`` and in ``log_prob``: with q(z|x) fixed at
    N((1, -0.5), diag(0.25, 2.25)), the latents reaching the decoder have that mean and standard
    deviation (20,000 draws: 5 standard errors). Kills `exp(1.5 * logvar)`, `exp(0.5 / logvar)`,
    `mu * ...` and a latent that is mu alone."""
    torch.manual_seed(0)
    m = models.build("vae", (1, 2, 2), 2, arch="mlp", latent_dim=2, hidden=8)
    _fixed_posterior(m, (1.0, -0.5), (math.log(0.25), math.log(2.25)))
    m.decoder = _Recorder((1, 2, 2))
    x = torch.zeros(20_000, 1, 2, 2)
    with torch.no_grad():
        m.loss(x)
        m.log_prob(x[:2000], samples=10)
    std = torch.tensor([0.5, 1.5])
    for z in m.decoder.seen:  # from loss, then from log_prob
        n = len(z)
        assert ((z.mean(0) - torch.tensor([1.0, -0.5])).abs() < 5 * std / n ** 0.5).all()
        assert ((z.std(0) - std).abs() < 5 * std / (2 * n) ** 0.5).all()


def test_iwae_bound_is_log_p_x_when_the_decoder_ignores_z():
    """With a decoder that ignores z, p(x) = p(x|z) exactly and the weights p(z)/q(z|x) have mean
    1: the IWAE bound with K = 1000 is log p(x|z) to within its bias Var(w)/2K (~1e-4 here, for
    q = N(0.3, 1.5 I) in 2 dimensions), and with K = 1 its mean is the loss's ELBO (analytic KL).
    Kills a wrong sign or factor on log q's `0.5 * logvar.sum`, log p(z) taken at eps, `+ log K`,
    and a K = 1 bound that is not the ELBO."""
    torch.manual_seed(0)
    m = models.build("vae", (1, 2, 2), 2, arch="mlp", latent_dim=2, hidden=8).eval()
    _fixed_posterior(m, (0.3, 0.3), (math.log(1.5),) * 2)
    with torch.no_grad():
        m.decoder[0][0].weight.zero_()  # the decoder's output no longer depends on z
        x = batch((1, 2, 2), 2, n=8)
        exact = m.likelihood.log_prob(m._decode(torch.zeros(8, 2), None), x)
        bound = m.log_prob(x.repeat(32, 1, 1, 1), samples=1000).view(32, 8).mean(0)
        assert (bound - exact).abs().max() < 0.02  # 7 standard errors of the 32 repeats' mean
        elbo = m.loss(x)["elbo"]  # recon is exact here: the decoder ignores the sampled z
        one = m.log_prob(x.repeat(4000, 1, 1, 1), samples=1)
    kl = 0.5 * 2 * (0.09 + 1.5 - 1 - math.log(1.5))
    assert elbo.item() == pytest.approx(exact.mean().item() - kl, abs=1e-5)
    assert abs(one.mean().item() - elbo.item()) < 5 * one.std().item() / len(one) ** 0.5


@pytest.mark.parametrize("kind", ["logistic", "categorical"])
def test_draws_follow_the_probabilities_of_log_prob(kind):
    """Each subpixel's draws land on level k as often as exp(log_prob) says (20,000 draws, 5
    sigma per level), including a logistic with its log-scale far below the floor of -7 and its
    location just past a bin edge, where the floor decides the masses. Kills samplers with a
    wrong spread or sign (`log u + log(1-u)`, `- gumbel`, a scale not exp(log-scale)) and a floor
    changed in one of log_prob, mean or sample only; the means are checked against the same
    masses."""
    torch.manual_seed(0)
    levels, n = 4, 20_000
    lik = Likelihood(kind, 1, levels)
    out = torch.randn(1, lik.out_channels, 1, 4) * 1.5
    if kind == "logistic":
        out[0, 0, 0, 3], out[0, 1, 0, 3] = 0.5 + 4e-4, -9.0  # 0.5: the edge between levels 1 and 2
    with torch.no_grad():
        draws = lik.sample(out.expand(n, -1, -1, -1)) * (levels - 1)
        for j in range(4):
            sub = out[..., j : j + 1]
            p = torch.stack([lik.log_prob(sub, torch.full((1, 1, 1, 1), k / (levels - 1))) for k in range(levels)])
            p = p.exp().flatten()
            freq = torch.stack([(draws[:, 0, 0, j].round() == k).float().mean() for k in range(levels)])
            assert ((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-4).all(), (j, freq, p)
            mean = lik.mean(sub).item()
            assert mean == pytest.approx((p * torch.arange(levels) / (levels - 1)).sum().item(), abs=1e-5)


@pytest.mark.parametrize("kind,spread", [("mse", "std"), ("mae", "mean_abs")])
def test_continuous_draws_have_the_likelihoods_scale(kind, spread):
    """A Gaussian draw has standard deviation sigma, a Laplace one mean absolute deviation b
    (sigma = b = 0.05 about 0.5, 256 levels: the grid and the clamp at 10 scales change them by
    < 1e-4; 20,000 draws, tolerance 5 standard errors of the mean absolute deviation, the larger
    one). Kills a sampler that ignores sigma, uses exp(-log sigma) or the other family (a
    Gaussian's mean absolute deviation is 0.8 sigma, a Laplace's std 1.41 b)."""
    torch.manual_seed(0)
    lik = Likelihood(kind, 1, 256, sigma=0.05)
    draws = lik.sample(torch.full((20_000, 1, 1, 1), 0.5)).flatten() - 0.5
    value = draws.std() if spread == "std" else draws.abs().mean()
    assert abs(value.item() - 0.05) < 5 * 0.05 / 20_000 ** 0.5 + 1e-4


@pytest.mark.parametrize("kind", ["mse", "mae"])
def test_learned_sigma_is_a_parameter_for_both_continuous_likelihoods(kind):
    """A learned scale is a parameter that starts at ``sigma``. Kills the learned scale of one
    of the two ("mse" or "mae" dropped from the test) and `nn.Parameter(None)` (an empty scale)."""
    m = models.build("vae", (1, 2, 2), 256, likelihood=kind, learn_sigma=True, sigma=0.2)
    assert any(p is m.likelihood.log_sigma for p in m.parameters())
    assert m.likelihood.log_sigma.item() == pytest.approx(math.log(0.2))


def test_hyper_parameter_bounds():
    """The smallest allowed values build and the next ones down raise. Kills `< 1` -> `< 2` or
    `<= 1`, `beta < 0` -> `<= 0`, and `sigma <= 0` -> `< 0`."""
    models.build("vae", (1, 2, 2), 2, latent_dim=1, channels=1, hidden=1, iw_samples=1, beta=0.0, kl_warmup_steps=0)
    models.build("vae", (1, 2, 2), 256, likelihood="mse", sigma=1e-3)
    for bad in ({"latent_dim": 0}, {"channels": 0}, {"hidden": 0}, {"iw_samples": 0}, {"beta": -0.1},
                {"kl_warmup_steps": -1}, {"likelihood": "mse", "sigma": 0.0}, {"arch": "resnet"}):
        with pytest.raises(ValueError):
            models.build("vae", (1, 2, 2), 256, **bad)


def test_conv_nets_halve_at_most_twice_and_double_their_width():
    """num_downsamples halves while both sides are even, at most ``most`` times; widths doubles
    after each halving. Kills `d < most` -> `d <= most`, `% 2 == 0` -> `% 3`, `and` -> `or`
    between the two sides' tests, and `<<` -> `>>`."""
    from models.vae import num_downsamples, widths

    assert [num_downsamples(*s) for s in ((28, 28), (8, 8), (12, 8), (8, 6), (2, 2), (3, 3), (6, 3), (3, 8))] == [2, 2, 2, 1, 1, 0, 0, 0]
    assert num_downsamples(8, 8, most=3) == 3
    assert widths(8, 2) == [8, 8, 16] and widths(8, 0) == [8]


def test_sampling_more_than_one_chunk_decodes_every_latent():
    """sample decodes in chunks of 1024: with 2,100 given latents (and labels), image i is
    decode(z_i, y_i). Kills a chunk step or slice end that is not 1024 (a skipped or repeated
    latent, or labels out of step with the latents)."""
    torch.manual_seed(0)
    for name, classes in (("vae", None), ("cvae", 3)):
        m = models.build(name, (1, 2, 2), 2, classes, arch="mlp", latent_dim=2, hidden=8).eval()
        z, y = torch.randn(2100, 2), (None if classes is None else torch.arange(2100) % 3)
        images = m.sample(2100, y, z=z, mean=True)
        assert images.shape == (2100, 1, 2, 2)
        torch.testing.assert_close(images, m.decode(z, y), atol=1e-6, rtol=0)


def test_continuous_means_are_the_location_clamped_to_the_unit_interval():
    """Kills a mean for mse/mae that drops either end of its clamp or clamps at 2."""
    out = torch.tensor([-0.5, 0.3, 1.7]).view(3, 1, 1, 1)
    for kind in ("mse", "mae"):
        assert Likelihood(kind, 1, 256).mean(out).flatten().tolist() == pytest.approx([0.0, 0.3, 1.0])


@pytest.mark.parametrize("shape", [(1, 4, 2), (1, 2, 4), (1, 6, 3)])
def test_conv_vae_works_on_non_square_images(shape):
    """The conv nets size their flattened features from the height and the width. Kills
    `size[0]` -> `size[1]` in the encoder's or the decoder's feature map (square images, the
    tiny shapes above, cannot tell them apart)."""
    torch.manual_seed(0)
    m = models.build("vae", shape, 2, channels=4, hidden=8, latent_dim=2)
    x = batch(shape, 2, n=4)
    assert torch.isfinite(m.loss(x)["loss"])
    assert m.log_prob(x).shape == (4,) and m.sample(3).shape == (3, *shape)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_scales_the_latents_standard_deviation(temperature):
    """sample draws z ~ N(0, T^2 I): the latents reaching the decoder have standard deviation T
    (20,000 draws, 5 standard errors). Kills a temperature applied only when T != 2 (or never)."""
    torch.manual_seed(0)
    m = models.build("vae", (1, 2, 2), 2, arch="mlp", latent_dim=2, hidden=8).eval()
    m.decoder = _Recorder((1, 2, 2))
    m.sample(20_000, mean=True, temperature=temperature)
    z = torch.cat(m.decoder.seen)
    assert ((z.std(0) - temperature).abs() < 5 * temperature / (2 * len(z)) ** 0.5).all()


def test_samples_are_draws_by_default_and_none_for_zero():
    """Without ``mean`` a binarised VAE's samples are 0 or 1, drawn around the mean (which is
    not); sample(0) is an empty batch of the image shape. Kills a sampler that always returns
    the mean, and mutants of the empty result. The VAE's loss is graph-capturable."""
    torch.manual_seed(0)
    m = models.build("vae", (1, 2, 2), 2, arch="mlp", latent_dim=2, hidden=8).eval()
    z = torch.zeros(4000, 2)
    draws, mean = m.sample(4000, z=z), m.sample(1, z=z[:1], mean=True)
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    assert ((mean > 0.05) & (mean < 0.95)).all()
    assert (draws.mean(0) - mean[0]).abs().max() < 5 * 0.5 / 4000 ** 0.5
    assert m.sample(0).shape == (0, 1, 2, 2)
    assert m.loss_capturable()
