"""AR(p) on the subpixel sequence: exact normalisation by enumeration, samples against
exp(log_prob), the band of p previous subpixels read off gradients with weights shared across
positions, the discretised noise against direct CDF differences, the fast sampler against the
naive one, class conditioning, and a few training steps."""
import math

import mpmath as mp

import pytest
import torch
from scipy import stats

import models
from models.layers import discrete_log_prob, discretized_log_prob
from tests.properties import (
    CASES,
    assert_class_conditional,
    assert_fast_sampler_matches_naive,
    assert_learns,
    assert_normalised,
    assert_samples_match,
    dependencies,
)

NOISES = ["logistic", "gaussian"]


def build(shape, levels, num_classes=None, p=3, noise="logistic", seed=0):
    torch.manual_seed(seed)
    model = models.build("ar", shape, levels, num_classes, p=p, noise=noise)
    with torch.no_grad():  # coefficients large enough that the conditionals differ visibly
        model.phi.normal_(0, 1.0)
        model.c.fill_(0.3)
        if model.class_c is not None:
            model.class_c.weight.normal_(0, 1.0)
    return model


@pytest.mark.parametrize("shape,levels", CASES)
@pytest.mark.parametrize("noise", NOISES)
def test_normalised(shape, levels, noise):
    assert_normalised(build(shape, levels, noise=noise), atol=1e-5)


@pytest.mark.parametrize("shape,levels", CASES)
@pytest.mark.parametrize("noise", NOISES)
def test_samples_match_log_prob(shape, levels, noise):
    assert_samples_match(build(shape, levels, noise=noise), n=20000)


@pytest.mark.parametrize("noise", NOISES)
def test_every_subpixel_is_normalised_over_256_levels(noise):
    model = build((1, 4, 4), 256, noise=noise)
    with torch.no_grad():
        model.log_scale.fill_(math.log(0.01))
        logits = model.logits(torch.rand(3, 1, 4, 4))
    total = torch.logsumexp(logits.double(), dim=1).exp()
    assert (total - 1).abs().max() < 1e-5


@pytest.mark.parametrize("p", [1, 4])
def test_reads_exactly_the_p_previous_subpixels_with_shared_weights(p):
    model = build((3, 3, 3), 2, p=p)
    dep = dependencies(model)
    rank = torch.empty(27, dtype=torch.long)
    rank[model.order()] = torch.arange(27)
    lag = rank[:, None] - rank[None, :]
    assert torch.equal(dep, (lag > 0) & (lag <= p))
    assert sum(t.numel() for t in model.parameters()) == p + 2  # c, phi_1..p, the noise scale
    # mu_t = c + sum_i phi_i x_{t-i}: the same coefficients at every position
    x = torch.rand(2, 3, 3, 3)
    seq = x.flatten(1)[:, model.order()]
    t = 10
    expected = model.c + sum(model.phi[i - 1] * seq[:, t - i] for i in range(1, p + 1))
    assert torch.allclose(model.means(x)[:, t], expected, atol=1e-6)


@pytest.mark.parametrize("noise,cdf", [("logistic", stats.logistic.cdf), ("gaussian", stats.norm.cdf)])
def test_discretised_noise_is_the_cdf_difference_with_open_end_bins(noise, cdf):
    levels, loc, scale = 5, torch.tensor(0.4, dtype=torch.float64), 0.3
    k = torch.arange(levels)
    lp = discretized_log_prob(k, loc, torch.tensor(math.log(scale), dtype=torch.float64), levels, noise)
    edges = [(j + 0.5) / (levels - 1) for j in range(levels - 1)]
    upper = [cdf((e - 0.4) / scale) for e in edges] + [1.0]
    lower = [0.0] + [cdf((e - 0.4) / scale) for e in edges]
    assert torch.allclose(lp.exp(), torch.tensor(upper) - torch.tensor(lower), atol=1e-10)
    far = discretized_log_prob(k, torch.tensor(40.0), torch.tensor(math.log(0.01)), levels, noise)
    assert torch.isfinite(far).all() and abs(far[-1].item()) < 1e-6


@pytest.mark.parametrize("shape,levels", CASES)
@pytest.mark.parametrize("num_classes", [None, 3])
def test_fast_sampler_equals_naive(shape, levels, num_classes):
    assert_fast_sampler_matches_naive(build(shape, levels, num_classes), n=200)


@pytest.mark.parametrize("noise", NOISES)
def test_log_prob_is_the_sum_of_the_conditionals(noise):
    model = build((3, 2, 2), 16, noise=noise)
    x = torch.randint(0, 16, (8, 3, 2, 2)).float() / 15
    assert torch.allclose(model.log_prob(x), discrete_log_prob(model.logits(x), model.to_levels(x), 16), atol=1e-4)


def test_conditional_has_a_per_class_intercept():
    model = build((1, 2, 2), 4, num_classes=3)
    assert_class_conditional(model, build((3, 5, 5), 2, num_classes=3))
    with pytest.raises(ValueError):
        model.log_prob(torch.rand(8, 1, 2, 2))


def test_p_zero_is_white_noise_around_c():
    model = build((1, 2, 2), 4, p=0)
    lp = model.logits(torch.rand(3, 1, 2, 2))
    assert torch.equal(lp, lp[:1, :, :1, :1, :1].expand_as(lp))


@pytest.mark.parametrize("hp,message", [
    ({"p": -1}, "p must be a non-negative number of previous subpixels, got -1"),
    ({"noise": "cauchy"}, "noise must be one of logistic, gaussian, got 'cauchy'")])
def test_rejects_bad_hyperparameters(hp, message):
    """Kills the messages changed or dropped: matched whole."""
    with pytest.raises(ValueError) as refused:
        models.build("ar", (1, 4, 4), **hp)
    assert str(refused.value) == message


def test_loss_decreases():
    torch.manual_seed(0)
    assert_learns(models.build("ar", (1, 8, 8), 2, p=8), lr=5e-2, gain=1.0)


@pytest.mark.parametrize("noise", ["logistic", "gaussian"])
@pytest.mark.parametrize("loc", [-0.5, 1.5])
def test_level_masses_far_in_either_tail_in_float32(noise, loc):
    """Bin edges 31 to 69 scales from the location, in float32: the log masses match a 50-digit
    mpmath reference and their gradients are finite. Kills the Gaussian tail side chosen by
    ``a - b`` (always the upper tail: below the location its CDFs underflow) and the log1mexp
    clamp moved to +1e-12 (the branch torch.where discards then holds log 0, whose gradient
    turns the kept one into NaN)."""
    mp.mp.dps = 50
    levels, scale = 5, 0.02
    cdf = mp.ncdf if noise == "gaussian" else (lambda z: 1 / (1 + mp.exp(-z)))
    loc_t = torch.tensor(loc, requires_grad=True)
    log_scale = torch.tensor(math.log(scale), requires_grad=True)
    lp = discretized_log_prob(torch.arange(levels), loc_t, log_scale, levels, noise)
    reference = []
    for k in range(levels):
        z_up = mp.inf if k == levels - 1 else (mp.mpf(k + 0.5) / (levels - 1) - loc) / scale
        z_low = -mp.inf if k == 0 else (mp.mpf(k - 0.5) / (levels - 1) - loc) / scale
        # Above the location, F(z_up) - F(z_low) = F(-z_low) - F(-z_up): no digit lost to 1 - F.
        mass = cdf(-z_low) - cdf(-z_up) if loc < 0 else cdf(z_up) - cdf(z_low)
        reference.append(float(mp.log(mass)))
    assert torch.allclose(lp.double(), torch.tensor(reference, dtype=torch.float64), rtol=1e-4, atol=1e-5), (lp, reference)
    lp.sum().backward()
    assert torch.isfinite(loc_t.grad) and torch.isfinite(log_scale.grad)
