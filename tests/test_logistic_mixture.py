"""The discretised mixture of logistics (PixelCNN++) head of pixelcnn, row_lstm and
diagonal_bilstm: exact normalisation by enumeration at tiny level counts, every per-subpixel
conditional normalised over 256 levels, log_prob the sum of the conditionals the samplers draw
from, the R -> G -> B dependence inside the pixel, fast sampling equal to naive sampling, and
samples against exp(log_prob)."""
import itertools
import math

import pytest
import torch

import models
from models.layers import discrete_log_prob, mixture_conditionals, mixture_log_prob, mixture_param_colors, mixture_param_count
from tests.properties import assert_autoregressive, assert_fast_sampler_matches_naive, assert_normalised, assert_samples_match

SMALL = {
    "pixelcnn": dict(hidden_channels=12, num_layers=1, head_channels=12, first_kernel_size=3),
    "gated_pixelcnn": dict(gated=True, hidden_channels=6, num_layers=1, head_channels=6, first_kernel_size=3),
    "row_lstm": dict(hidden=6, layers=1, head_channels=12),
    "diagonal_bilstm": dict(hidden=4, layers=1, head_channels=12),
}


def build(kind, shape, levels, mixtures=3, num_classes=None, std=0.5):
    torch.manual_seed(0)
    name = "pixelcnn" if kind == "gated_pixelcnn" else kind
    model = models.build(name, shape, levels, num_classes, output="logistic_mixture", mixtures=mixtures, **SMALL[kind])
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


@pytest.mark.parametrize("colors", [1, 3])
@pytest.mark.parametrize("levels", [2, 3, 5])
def test_mixture_is_normalised_and_its_conditionals_multiply_to_it(colors, levels):
    torch.manual_seed(colors * 10 + levels)
    params = torch.randn(mixture_param_count(colors, 4)) * 2
    x = torch.tensor(list(itertools.product(range(levels), repeat=colors))).float() / (levels - 1)
    joint = mixture_log_prob(params.expand(len(x), -1), x, levels)
    assert abs(torch.logsumexp(joint.double(), 0).exp().item() - 1) < 1e-5
    cond = mixture_conditionals(params.expand(len(x), -1), x, levels)
    k = (x * (levels - 1)).round().long()
    assert torch.allclose(cond.gather(-1, k[..., None])[..., 0].sum(-1), joint, atol=1e-5)


def test_green_depends_on_red_inside_the_pixel_and_red_on_nothing():
    params = torch.randn(2, mixture_param_count(3, 2))
    x = torch.rand(2, 3)
    base = mixture_conditionals(params, x, 256)
    redder = mixture_conditionals(params, x + torch.tensor([0.5, 0.0, 0.0]), 256)
    assert torch.equal(base[:, 0], redder[:, 0])
    assert not torch.allclose(base[:, 1], redder[:, 1])
    bluer = mixture_conditionals(params, x + torch.tensor([0.0, 0.0, 0.5]), 256)
    assert torch.equal(base, bluer)


def _pixel_params(model, x):
    """The head's mixture parameters (n, H, W, P) of images x."""
    with torch.no_grad():
        out = model._head_output(x, None)
    return out.permute(0, 2, 3, 1) if out.shape[-1] != mixture_param_count(3, model.mixtures) else out


@pytest.mark.parametrize("kind", list(SMALL))
def test_each_colours_parameters_read_the_groups_up_to_it(kind):
    """Kills a head that reads only the R group for every parameter (two thirds of head_channels
    dead), and one that lets a parameter read its own or a later colour: at a pixel, the mixture
    logits and R's parameters change with none of its subpixels, G's with R but not with G or B,
    B's with R and G but not with B."""
    model = build(kind, (3, 2, 2), 4)
    colour = mixture_param_colors(3, model.mixtures)
    x = torch.randint(4, (4, 3, 2, 2), generator=torch.Generator().manual_seed(0)).float() / 3
    base = _pixel_params(model, x)[:, 1, 1]
    for c in range(3):
        moved = x.clone()
        moved[:, c, 1, 1] = 1 - moved[:, c, 1, 1].round()  # another level at the last pixel
        changed = (_pixel_params(model, moved)[:, 1, 1] - base).abs().amax(0) > 1e-6  # (P,)
        assert not changed[colour <= c].any(), f"a parameter of colour <= {c} reads channel {c} of its own pixel"
        for later in range(c + 1, 3):
            assert changed[colour == later].any(), f"colour {later}'s parameters ignore channel {c} of the pixel"


@pytest.mark.parametrize("kind", list(SMALL))
@pytest.mark.parametrize("shape,levels", [((1, 3, 3), 2), ((3, 2, 2), 2), ((1, 2, 2), 4), ((3, 1, 2), 3)])
def test_normalised_by_enumeration(kind, shape, levels):
    assert_normalised(build(kind, shape, levels), atol=1e-5)


@pytest.mark.parametrize("kind", list(SMALL))
def test_each_conditional_is_normalised_over_256_levels(kind):
    model = build(kind, (3, 3, 3), 256, mixtures=10, std=0.3)
    x = torch.randint(0, 256, (2, 3, 3, 3)).float() / 255
    with torch.no_grad():
        logits = model.logits(x)  # (n, 256, C, H, W) log-probabilities given the parents
        total = torch.logsumexp(logits.double(), dim=1).exp()
        assert (total - 1).abs().max() < 1e-5
        direct = model.log_prob(x)
        assert torch.allclose(direct, discrete_log_prob(logits, model.to_levels(x), 256), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("kind", list(SMALL))
@pytest.mark.parametrize("shape,levels,num_classes", [((3, 2, 2), 4, None), ((1, 3, 3), 2, 3), ((3, 2, 2), 256, 3)])
def test_fast_sampler_equals_naive(kind, shape, levels, num_classes):
    assert_fast_sampler_matches_naive(build(kind, shape, levels, num_classes=num_classes), n=48)


@pytest.mark.parametrize("kind", ["pixelcnn", "row_lstm"])
def test_samples_match_log_prob(kind):
    assert_samples_match(build(kind, (3, 1, 2), 3), n=20000)


@pytest.mark.parametrize("kind", ["pixelcnn", "diagonal_bilstm"])
def test_autoregressive_with_colour(kind):
    assert_autoregressive(build(kind, (3, 4, 4), 4))


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    model = models.build("pixelcnn", (1, 6, 6), 256, output="logistic_mixture", mixtures=2, **SMALL["pixelcnn"])
    x = (torch.rand(16, 1, 6, 6) < torch.linspace(0.1, 0.9, 6)).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(x)["loss"].item()
    for _ in range(10):
        loss = model.loss(x)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.loss(x)["loss"].item() < first - 10


@pytest.mark.parametrize("hp", [{"output": "gaussian"}, {"mixtures": 0}, {"embed_levels": True, "output": "logistic_mixture"}])
def test_rejects_bad_hyperparameters(hp):
    with pytest.raises(ValueError):
        models.build("pixelcnn", (1, 4, 4), 256, **hp)
    if "embed_levels" not in hp:
        with pytest.raises(ValueError):
            models.build("row_lstm", (1, 4, 4), 256, **hp)


def _reference_conditionals(params, x, levels, temperature=1.0):
    """PixelCNN++ (Salimans et al., 2017) written out in float64 for one pixel: P(x_c = k | x_<c)
    (C, L). Rows of ``params`` (groups, M): mixture logits, locations, log-scales (at least -7),
    then tanh coefficients of the pairs (1, 0), (2, 0), (2, 1); channel c's mean is its location
    plus coef * v_c' for c' < c, where v = 2 k / (L - 1) - 1 is the level on [-1, 1]; level k
    has the logistic mass between v_k -+ 1 / (L - 1), with open end bins."""
    p = params.double().reshape(-1, params.shape[-1] // (1 + 2 * 3 + 3))
    colors, half = x.shape[-1], 1.0 / (levels - 1)
    logit_pi, loc, log_scale, coef = p[0] / temperature, p[1:4], p[4:7].clamp(min=-7) + math.log(temperature), p[7:].tanh()
    k = (x.double() * (levels - 1)).round()
    v = 2 * k / (levels - 1) - 1
    pairs = {(1, 0): 0, (2, 0): 1, (2, 1): 2}
    weights, out = torch.log_softmax(logit_pi, 0).exp(), torch.zeros(colors, levels, dtype=torch.float64)
    for c in range(colors):
        mean = loc[c] + sum(coef[pairs[(c, e)]] * v[e] for e in range(c))
        scale = log_scale[c].exp()
        grid = torch.linspace(-1, 1, levels, dtype=torch.float64)[:, None]
        upper = torch.where(grid < 1, torch.sigmoid((grid + half - mean) / scale), torch.ones(()))
        lower = torch.where(grid > -1, torch.sigmoid((grid - half - mean) / scale), torch.zeros(()))
        mass = upper - lower  # (L, M)
        out[c] = (mass * weights / weights.sum()).sum(1)
        weights = weights * mass[int(k[c])]  # what x_c tells of each component
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_mixture_is_the_pixelcnnpp_formula_written_out(temperature):
    """Kills a wrong centring of the conditioning level (``v = 2k / (L - 1) + 1``, ``- 2``,
    ``* (L - 1)``, ``3 k``, ``L + 1``), the coefficients read from the log-scale rows
    (``1 - 2 * colors``), the mixture logits read from a location row, the log-scale floor
    moved (-8 for -7: one scale is set below the floor, at a mean just off a bin edge) and the
    temperature skipped at T = 2."""
    levels, m = 5, 2
    torch.manual_seed(3)
    params = torch.randn(1 + 6 + 3, m)
    params[1, 0] = -1 + 2 * 1 / (levels - 1) + 1 / (levels - 1) + 0.001  # red's mean just above an edge
    params[4, 0] = -7.5                                                    # and its scale below the floor
    params = params.reshape(-1)
    x = torch.tensor([[0.25, 0.5, 1.0], [0.0, 1.0, 0.25], [0.75, 0.0, 0.5]])
    got = mixture_conditionals(params.expand(len(x), -1), x, levels, temperature).double().exp()
    for i in range(len(x)):
        assert torch.allclose(got[i], _reference_conditionals(params, x[i], levels, temperature), atol=1e-5), i
    if temperature == 1.0:
        joint = torch.stack([_reference_conditionals(params, xi, levels)[range(3), (xi * 4).round().long()].log().sum()
                             for xi in x])
        assert torch.allclose(mixture_log_prob(params.expand(len(x), -1), x, levels).double(), joint, atol=1e-5)


@pytest.mark.parametrize("kind", list(SMALL))
def test_a_conditional_mixture_scores_with_its_labels(kind):
    """A class-conditional mixture model's log_prob(x, y) is the sum of its conditionals given
    y, another class scores otherwise, and the head gives ``mixture_param_count(C, mixtures)``
    parameters per pixel. Kills the labels dropped from the mixture log_prob of Row LSTM and
    Diagonal BiLSTM, and ``mixtures`` not passed on by DiagonalBiLSTM (it then gets 10)."""
    model = build(kind, (3, 2, 2), 4, mixtures=3, num_classes=3)
    x = torch.randint(4, (6, 3, 2, 2)).float() / 3
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        lp = model.log_prob(x, y)
        assert torch.allclose(lp, discrete_log_prob(model.logits(x, y), model.to_levels(x), 4), atol=1e-4)
        assert not torch.allclose(lp, model.log_prob(x, (y + 1) % 3), atol=1e-3)
        out = model._head_output(x, y)
    params_axis = 1 if kind.endswith("pixelcnn") else -1
    assert out.shape[params_axis] == mixture_param_count(3, 3)


@pytest.mark.parametrize("kind", list(SMALL))
def test_one_logistic_is_a_mixture_too(kind):
    """``mixtures = 1`` is the smallest mixture (a single discretised logistic per pixel): it
    builds and normalises. Kills ``< 2`` and ``<= 1`` for ``< 1`` in the check."""
    assert_normalised(build(kind, (3, 1, 2), 3, mixtures=1), atol=1e-5)


@pytest.mark.parametrize("kind", list(SMALL))
def test_every_mask_is_zero_or_one(kind):
    """A mask only cuts connections; it never scales the weights it keeps (which would change
    their initial scale and learning rate). Kills a mask entry set to 2."""
    model = build(kind, (3, 3, 3), 4)
    masks = [b for name, b in model.named_buffers() if "mask" in name]
    assert masks and all(set(m.unique().tolist()) <= {0.0, 1.0} for m in masks)
