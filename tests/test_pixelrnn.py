"""PixelRNN (Row LSTM, Diagonal BiLSTM): exact normalisation, samples against exp(log_prob),
the autoregressive property, each model's receptive field (the Row LSTM's triangle, the
Diagonal BiLSTM's complete field and the paper construction's blind spot), and incremental
sampling giving the same images as the naive sampler from the same noise."""
from __future__ import annotations

import pytest
import torch

import models
from models.pixelrnn import lstm_scan
from tests.properties import assert_autoregressive, assert_normalised, assert_samples_match, dependencies

NAMES = ["row_lstm", "diagonal_bilstm"]
TINY = [((1, 3, 3), 2), ((3, 2, 2), 2), ((1, 2, 2), 4)]


def build(name, shape, levels=2, num_classes=None, sharpen=True, **hparams):
    torch.manual_seed(0)
    hparams = {"hidden": 6, "layers": 2, "head_channels": 12, **hparams}
    model = models.build(name, shape, levels, num_classes, **hparams)
    if sharpen:
        # Larger weights than the default initialisation make the conditionals far from
        # uniform, so that a wrong normaliser or a wrong sampler shows in the statistics.
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.5)
    return model.eval()


def unseen_earlier(model, n: int = 16) -> set[tuple[int, int]]:
    """(i, j) pairs of flattened subpixels with j before i in the model's order whose value the
    logits of i do not depend on."""
    torch.manual_seed(1)
    dep = dependencies(model, x=torch.rand(n, *model.image_shape))
    order = model.order()
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    earlier = rank[None, :] < rank[:, None]
    assert not (dep & ~earlier).any(), "a conditional depends on its own or a later subpixel"
    return {tuple(p) for p in (earlier & ~dep).nonzero().tolist()}


def pixel_pairs(shape, pairs) -> set[tuple[int, int]]:
    """Every colour combination of (target pixel, source pixel) as flattened (C, H, W) indices."""
    c, h, w = shape
    return {(co * h * w + ti * w + tj, ci * h * w + si * w + sj)
            for (ti, tj), (si, sj) in pairs for co in range(c) for ci in range(c)}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape, levels", TINY)
def test_normalised(name, shape, levels):
    assert_normalised(build(name, shape, levels))


@pytest.mark.parametrize("name", NAMES)
def test_normalised_per_class(name):
    model = build(name, (1, 2, 2), 4, num_classes=3)
    for y in range(3):
        assert_normalised(model, y=y)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape, levels", TINY)
def test_samples_match_probabilities(name, shape, levels):
    assert_samples_match(build(name, shape, levels), n=20000, seed=0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape, levels, num_classes", [((1, 4, 4), 2, None), ((3, 3, 3), 4, None), ((3, 3, 3), 2, 3)])
def test_incremental_sampling_equals_naive(name, shape, levels, num_classes):
    model = build(name, shape, levels, num_classes)
    torch.manual_seed(2)
    noise = torch.rand(24, *shape)
    fast = model.sample(24, noise=noise)
    naive = model.sample_naive(24, noise=noise)
    assert torch.equal(fast, naive)
    assert len({tuple(img.flatten().tolist()) for img in fast}) > 1, "all samples identical: a test that cannot fail"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("levels", [2, 4])
def test_autoregressive_with_colour(name, levels):
    dep = assert_autoregressive(build(name, (3, 5, 5), levels))
    assert dep.any()


def test_row_lstm_receptive_field_is_a_triangle():
    """At 5 wide, pixel (i, 0) reaches row i-1 only up to column 3 (the 7x7 input conv): the
    states of row i-1 it reads were computed from pixels at or left of column 1. Every other
    earlier subpixel is seen; deeper layers do not change that."""
    for shape in [(1, 5, 5), (3, 5, 5)]:
        model = build("row_lstm", shape, sharpen=False, hidden=12, head_channels=24)
        expected = pixel_pairs(shape, [((i, 0), (i - 1, 4)) for i in range(1, 5)])
        assert unseen_earlier(model) == expected


def test_row_lstm_triangle_widens_with_the_kernel():
    """The right edge of the triangle: pixel (i, j) sees row i-d (d >= 1) up to column
    j + 3 + (d-1) * (k // 2): 3 from the 7x7 input conv, then k // 2 more per row climbed
    through the 1 x k state-to-state conv. At 9 wide and 4 high kernels 3 and 5 differ (at 5
    wide they do not)."""
    h, w = 4, 9
    for k in (3, 5):
        model = build("row_lstm", (1, h, w), sharpen=False, hidden=12, head_channels=24, kernel_size=k)
        unseen = unseen_earlier(model)
        for i in range(1, h):
            for j in range(w):
                for d in range(1, i + 1):
                    seen = [s for s in range(w) if (i * w + j, (i - d) * w + s) not in unseen]
                    assert max(seen) == min(w - 1, j + 3 + (d - 1) * (k // 2)), (k, i, j, d)


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 5, 5)])
def test_diagonal_bilstm_sees_every_earlier_subpixel(shape):
    model = build("diagonal_bilstm", shape, sharpen=False, hidden=12, head_channels=24)
    assert unseen_earlier(model) == set()


def test_paper_diagonal_bilstm_has_a_blind_spot():
    """Without the image in the right-to-left stream (the paper's construction), the last pixel
    of row i-1 reaches pixel (i, j) only through the 7x7 mask-A input conv: for j < W-4 never."""
    model = build("diagonal_bilstm", (1, 5, 5), sharpen=False, hidden=12, head_channels=24, close_blind_spot=False)
    assert unseen_earlier(model) == pixel_pairs((1, 5, 5), [((i, 0), (i - 1, 4)) for i in range(1, 5)])


@pytest.mark.parametrize("name", NAMES)
def test_loss_trains_at_28x28(name):
    torch.manual_seed(0)
    model = models.build(name, (1, 28, 28), 2, num_classes=10, hidden=8, layers=1, head_channels=16)
    x = (torch.rand(3, 1, 28, 28) < 0.3).float()
    y = torch.tensor([0, 4, 9])
    parts = model.loss(x, y)
    assert parts["loss"].dim() == 0 and torch.isfinite(parts["loss"])
    parts["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    lp = model.log_prob(x, y)
    assert lp.shape == (3,) and torch.allclose(-lp.mean(), parts["loss"].detach())
    with pytest.raises(ValueError):
        model.log_prob(x)  # conditional: labels required
    samples = model.sample(2, y=3)
    assert samples.shape == (2, 1, 28, 28) and set(samples.unique().tolist()) <= {0.0, 1.0}


def test_bad_hyperparameters():
    with pytest.raises(ValueError):
        models.build("row_lstm", (1, 4, 4), kernel_size=2)
    with pytest.raises(ValueError):
        models.build("diagonal_bilstm", (1, 4, 4), hidden=0)
    with pytest.raises(ValueError):
        models.build("diagonal_bilstm", (1, 4, 4), kernel_size=3)  # a Row LSTM hyper-parameter


@pytest.mark.parametrize("groups, kernel, padding", [(1, 3, 1), (1, 5, 2), (2, 2, 1)])
def test_lstm_scan_backward_is_the_gradient(groups, kernel, padding):
    """The recurrence's hand-written backward (both models' configurations: the Row LSTM's k x 1
    kernels, the Diagonal BiLSTM's two streams with a 2 x 1 kernel) against finite differences."""

    torch.manual_seed(0)
    hidden = 3
    gates = torch.randn(4, 2, groups * 4 * hidden, 5, dtype=torch.double, requires_grad=True)
    weight = torch.randn(groups * 4 * hidden, hidden, kernel, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g, w: lstm_scan(g, w, padding, groups), (gates, weight))


@pytest.mark.parametrize("name", ["row_lstm", "diagonal_bilstm"])
def test_bf16_autocast_trains_and_keeps_the_recurrence_in_float32(name):
    """Under bf16 autocast (the Trainer's on CUDA; CPU autocast here) the loss and its gradients
    stay finite and near float32's: the recurrence itself runs in float32."""
    torch.manual_seed(0)
    model = models.build(name, (1, 8, 8), 2, hidden=8, layers=2)
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.3))
    exact = model.loss(x)["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(x)["loss"]
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert loss.item() == pytest.approx(exact.item(), rel=0.02)


@pytest.mark.parametrize("name,kernel", [("row_lstm", 3), ("row_lstm", 5), ("row_lstm", 1), ("diagonal_bilstm", 0)])
def test_each_layer_stepped_pixel_by_pixel_equals_its_parallel_pass(name, kernel):
    """The sampler's per-pixel path through a layer (start, begin_row, step) gives the layer's
    parallel output at every pixel, compared as continuous values (a sampler compared by its
    discrete draws misses small leaks), for Row LSTM kernels 1, 3 and 5. Kills the pixel's own
    mask B put on tap 1 of the 1 x k input window (``mask[:, +1]``, equal to ``[:, -1]`` only
    for k = 3) and ``< 2`` for ``< 1`` in the kernel check (k = 1 reads no state from beside
    the pixel above)."""
    hp = {"kernel_size": kernel} if name == "row_lstm" else {}
    model = build(name, (3, 4, 5), 4, num_classes=3, **hp)
    layer = model.layers[0]
    n, (c, h, w) = 2, model.image_shape
    torch.manual_seed(2)
    stream, image = torch.randn(n, h, w, model.features), torch.rand(n, h, w, c) * 2 - 1
    y = torch.tensor([0, 2])
    with torch.no_grad():
        parallel = layer(stream, image, y)
        state = layer.start(n, w, y)
        for r in range(h):
            layer.begin_row(state, r, image[:, r - 1] if r else torch.zeros(n, w, c))
            for j in range(w):
                assert torch.allclose(layer.step(state, stream[:, r, j], j), parallel[:, r, j], atol=1e-5), (r, j)


def test_lstm_scan_runs_in_float32_under_bf16_autocast():
    """Given bfloat16 gates and weights under autocast, the scan returns float32 states equal to
    float32's scan of the same values: the state carried over hundreds of steps is never
    rounded to 8 bits. Kills the float32 cast dropped (``... and False``)."""
    torch.manual_seed(0)
    gates, weight = torch.randn(12, 2, 8, 5).bfloat16(), (torch.randn(8, 2, 3) * 0.5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        states = lstm_scan(gates, weight, 1)
    assert states.dtype == torch.float32
    assert torch.allclose(states, lstm_scan(gates.float(), weight.float(), 1), atol=1e-6)
