"""NADE: the vectorised logits equal the course's recursion, exact normalisation, samples
against exp(log_prob), the autoregressive property, incremental sampling equal to naive
sampling, class conditioning, and a few training steps."""
import pytest
import torch

import models
from tests.properties import (
    CASES,
    assert_autoregressive,
    assert_class_conditional,
    assert_fast_sampler_matches_naive,
    assert_learns,
    assert_normalised,
    assert_samples_match,
)


def build(shape, levels, num_classes=None, hidden_units=8):
    torch.manual_seed(0)
    model = models.build("nade", shape, levels, num_classes, hidden_units=hidden_units)
    with torch.no_grad():  # weights large enough that the conditionals differ visibly
        for p in model.parameters():
            p.normal_(0, 1.0)
    return model


def recursion_logits(model, x):
    """a_1 = c, a_{i+1} = a_i + W[:, i] x_i, logit_i = alpha_i . sigmoid(a_i) + b_i, one i at a time."""
    xo = x.flatten(1)[:, model.order()]
    a = model.c.expand(x.shape[0], -1)
    out = []
    for i in range(xo.shape[1]):
        out.append(torch.sigmoid(a) @ model.V[i].T + model.b[i])
        a = a + xo[:, i : i + 1] * model.W[i]
    return torch.stack(out, 1)  # (n, D, L_out) in generation order


@pytest.mark.parametrize("shape,levels", [((3, 2, 2), 2), ((1, 2, 2), 4)])
def test_logits_equal_the_recursion(shape, levels):
    model = build(shape, levels)
    x = torch.randint(0, levels, (5, *shape)) / (levels - 1)
    expected = recursion_logits(model, x)
    got = model.logits(x)
    got = got.flatten(1)[:, model.order(), None] if levels == 2 else got.flatten(2).transpose(1, 2)[:, model.order()]
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("shape,levels", CASES)
def test_normalised(shape, levels):
    assert_normalised(build(shape, levels))


@pytest.mark.parametrize("shape,levels", CASES)
def test_samples_match_log_prob(shape, levels):
    assert_samples_match(build(shape, levels), n=20000)


@pytest.mark.parametrize("levels", [2, 4])
def test_autoregressive_with_colour(levels):
    dep = assert_autoregressive(build((3, 5, 5), levels, hidden_units=16))
    assert dep.sum() == 75 * 74 // 2  # every conditional reads every previous subpixel


@pytest.mark.parametrize("shape,levels", CASES)
@pytest.mark.parametrize("num_classes", [None, 3])
def test_incremental_sampling_equals_naive(shape, levels, num_classes):
    assert_fast_sampler_matches_naive(build(shape, levels, num_classes), n=200)


def test_conditional():
    assert_class_conditional(build((1, 2, 2), 4, num_classes=3), build((3, 5, 5), 2, num_classes=3))


def test_rejects_bad_hidden_units():
    """0 hidden units is refused; 1 is a valid (tiny) NADE that still normalises (kills `< 1` ->
    `<= 1` or `< 2` in the check)."""
    with pytest.raises(ValueError, match="hidden_units"):
        models.build("nade", (1, 4, 4), hidden_units=0)
    assert_normalised(models.build("nade", (1, 2, 2), hidden_units=1))


def test_loss_decreases():
    torch.manual_seed(0)
    assert_learns(models.build("nade", (1, 8, 8), 2, hidden_units=32))
