"""FVSBN and AR(p): exact normalisation, samples against exp(log_prob), the autoregressive
(and AR(p) band) structure read off gradients, incremental sampling equal to naive sampling,
class conditioning, and a few training steps."""
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
    dependencies,
)


def build(shape, levels, num_classes=None, **hp):
    torch.manual_seed(0)
    model = models.build("fvsbn", shape, levels, num_classes, **hp)
    with torch.no_grad():  # weights large enough that the conditionals differ visibly
        model.linear.weight.normal_(0, 1.0)
        model.linear.bias.normal_(0, 1.0)
        if model.class_bias is not None:
            model.class_bias.weight.normal_(0, 1.0)
    return model


@pytest.mark.parametrize("shape,levels", CASES)
@pytest.mark.parametrize("order", [0, 2])
def test_normalised(shape, levels, order):
    assert_normalised(build(shape, levels, order=order))


@pytest.mark.parametrize("shape,levels", CASES)
def test_samples_match_log_prob(shape, levels):
    assert_samples_match(build(shape, levels), n=20000)


@pytest.mark.parametrize("levels", [2, 4])
def test_autoregressive_with_colour(levels):
    dep = assert_autoregressive(build((3, 5, 5), levels))
    assert dep.sum() == 75 * 74 // 2  # a full regression on every previous subpixel


@pytest.mark.parametrize("p", [1, 4])
def test_order_p_reads_exactly_the_p_previous_subpixels(p):
    model = build((3, 5, 5), 2, order=p)
    dep = dependencies(model)
    rank = torch.empty(75, dtype=torch.long)
    rank[model.order()] = torch.arange(75)
    lag = rank[:, None] - rank[None, :]
    assert torch.equal(dep, (lag > 0) & (lag <= p))


@pytest.mark.parametrize("shape,levels", CASES)
@pytest.mark.parametrize("num_classes", [None, 3])
def test_incremental_sampling_equals_naive(shape, levels, num_classes):
    assert_fast_sampler_matches_naive(build(shape, levels, num_classes, order=3), n=200)


def test_conditional():
    model = build((1, 2, 2), 4, num_classes=3)
    assert_class_conditional(model, build((3, 5, 5), 2, num_classes=3))
    with pytest.raises(ValueError):
        model.log_prob(torch.rand(8, 1, 2, 2))


def test_rejects_negative_order():
    with pytest.raises(ValueError, match="order"):
        models.build("fvsbn", (1, 4, 4), order=-1)


def test_loss_decreases():
    torch.manual_seed(0)
    assert_learns(models.build("fvsbn", (1, 8, 8), 2))
