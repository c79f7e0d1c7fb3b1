"""MADE: exact normalisation, the autoregressive property of every mask set, samples that
follow log_prob, masks that never train, and order-agnostic training."""
from __future__ import annotations

import pytest
import torch

import models
from tests.properties import assert_normalised, assert_samples_match, dependencies


class OneMask:
    """A view of a multi-mask MADE as the single autoregressive model of mask set k."""

    def __init__(self, model, k):
        self.m, self.k = model, k
        self.image_shape, self.levels, self.device = model.image_shape, model.levels, model.device

    def logits(self, x, y=None):
        return self.m.logits(x, y, mask=self.k)


CASES = [  # shape, levels, num_masks, num_classes
    ((1, 3, 3), 2, 1, None),
    ((3, 2, 2), 2, 3, None),
    ((1, 2, 2), 4, 1, None),
    ((1, 2, 2), 4, 2, 3),
    ((1, 3, 3), 2, 4, 2),
]


@pytest.mark.parametrize("shape,levels,num_masks,num_classes", CASES)
def test_exactly_normalised_and_sampled(shape, levels, num_masks, num_classes):
    torch.manual_seed(0)
    model = models.build("made", shape, levels=levels, num_classes=num_classes, hidden=[16, 16], num_masks=num_masks)
    y = None if num_classes is None else 1
    assert_normalised(model, y=y)
    assert_samples_match(model, n=20000, y=y)


@pytest.mark.parametrize("levels,num_classes", [(2, None), (4, 3)])
def test_no_conditional_sees_itself_or_its_future(levels, num_classes):
    torch.manual_seed(0)
    model = models.build("made", (3, 5, 5), levels=levels, num_classes=num_classes, hidden=[64, 64], num_masks=3)
    y = None if num_classes is None else torch.tensor([0, 2])
    for k in range(3):
        order = model.order(k)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        dep = dependencies(OneMask(model, k), y=y)
        assert not (dep & (rank[None, :] >= rank[:, None])).any(), f"mask set {k} leaks the future"
        assert dep.any(), "the network ignores its inputs"
    assert not torch.equal(model.order(0), model.order(1)), "order-agnostic masks should use other orders"


def test_masked_weights_never_change():
    torch.manual_seed(0)
    model = models.build("made", (1, 4, 4), hidden=[20, 20], num_masks=1)
    assert not any("mask" in name for name, _ in model.named_parameters()), "masks must be buffers"
    before = [p.detach().clone() for p in model.parameters()]
    masks = [model.mask_0[0], model.mask_1[0], model.mask_2[0]]
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.bernoulli(torch.full((32, 1, 4, 4), 0.5))
    for _ in range(3):
        opt.zero_grad()
        model.loss(x)["loss"].backward()
        opt.step()
    weights = [model.layers[0].weight, model.layers[1].weight, model.output.weight]
    old = [before[0], before[2], before[4]]
    for w, w0, mask in zip(weights, old, masks):
        assert torch.equal(w[mask == 0], w0[mask == 0]), "a masked weight moved"
        assert not torch.equal(w[mask == 1], w0[mask == 1]), "unmasked weights should train"


def test_training_cycles_through_mask_sets_and_ensembles_at_test_time():
    torch.manual_seed(0)
    model = models.build("made", (1, 3, 3), hidden=[16], num_masks=3)
    x = torch.bernoulli(torch.full((8, 1, 3, 3), 0.5))
    model.train()
    losses = [model.loss(x)["loss"].item() for _ in range(3)]
    assert int(model.step_mask) == 3 and len(set(losses)) == 3
    per_mask = torch.stack([models.layers.discrete_log_prob(model.logits(x, mask=k), model.to_levels(x), 2) for k in range(3)])
    expected = torch.logsumexp(per_mask, 0) - torch.log(torch.tensor(3.0))
    assert torch.allclose(model.log_prob(x), expected)


def test_unknown_hyperparameter_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: .*hidden"):
        models.build("made", (1, 28, 28), hiden=[10])


def _unit_degrees(model, k):
    """The degree m of every unit of mask set k, read back from the masks themselves: an input's
    degree is its place in the order; a first-hidden unit's is the largest input degree it reads
    (input -> hidden keeps m(k) >= d); a last-hidden unit's is D minus the number of outputs of
    one block that read it (hidden -> output keeps m(d) > m(k))."""
    order = model.order(k)
    d = len(order)
    deg_in = torch.empty(d, dtype=torch.long)
    deg_in[order] = torch.arange(1, d + 1)
    first = model.mask_0[k].cpu()
    m_first = (first * deg_in[None, :]).amax(1).long()
    last = getattr(model, f"mask_{len(model.hidden)}")[k].cpu()[:d]  # the first output block
    m_last = d - last.sum(0).long()
    return deg_in, m_first, m_last


@pytest.mark.parametrize("order", ["natural", "random"])
def test_every_connection_obeys_the_degree_rule(order):
    """Kills the mutant `>=` -> `>` in MADE's hidden-to-hidden mask (and `>=` -> `>` at the input,
    `>` -> `>=` at the output): each mask must be exactly the rule applied to the units' degrees."""
    model = models.build("made", (1, 4, 4), hidden=[40, 40], num_masks=2, order=order)
    for k in range(2):
        deg_in, m1, m2 = _unit_degrees(model, k)
        assert m1.min() >= 1 and m2.max() <= len(deg_in) - 1
        assert torch.equal(model.mask_0[k].cpu(), (m1[:, None] >= deg_in[None, :]).float())
        assert torch.equal(model.mask_1[k].cpu(), (m2[:, None] >= m1[None, :]).float())
        assert torch.equal(model.mask_2[k].cpu(), (deg_in[:, None] > m2[None, :]).float())


@pytest.mark.parametrize("levels", [2, 4])
def test_every_conditional_reads_its_immediate_predecessor(levels):
    """Kills the hidden-to-hidden mutant `>=` -> `>` (with hidden [h, h] it leaves no path from
    input d-1 to output d): the count of mask paths, and the gradient of output d with respect to
    input d-1 under random weights, are non-zero for every conditional but the first."""
    torch.manual_seed(0)
    model = models.build("made", (1, 3, 3), levels=levels, hidden=[64, 64], num_masks=2, order="random")
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.1, 1.0)  # positive weights: a path of open masks cannot cancel out
    d = model.num_dims
    for k in range(2):
        order = model.order(k)
        paths = model.mask_2[k][:d] @ model.mask_1[k] @ model.mask_0[k]  # (D out, D in)
        x = torch.full((1, 1, 3, 3), 0.5)
        jac = torch.autograd.functional.jacobian(lambda v, k=k: model.logits(v, mask=k).reshape(-1), x).reshape(-1, d)
        for t in range(1, d):
            out, prev = int(order[t]), int(order[t - 1])
            assert paths[out, prev] > 0, f"mask set {k}: conditional {t} has no path from its predecessor"
            assert jac[out, prev] != 0, f"mask set {k}: conditional {t} does not read its predecessor"


def test_eval_loss_with_several_mask_sets_is_the_ensemble_nll():
    """In eval mode a MADE with several mask sets reports the NLL of its mask ensemble,
    -log_prob(x, y).mean(), with the labels passed on. Kills the sign flipped and x or y
    dropped in that branch of loss (found by the 2026-12-06 mutmut run)."""
    torch.manual_seed(0)
    m = models.build("made", (1, 2, 2), 2, num_classes=3, hidden=(8,), num_masks=2).eval()
    x = torch.randint(2, (5, 1, 2, 2)).float()
    y = torch.tensor([0, 1, 2, 0, 1])
    nll = m.loss(x, y)["loss"]
    assert nll.item() > 0
    assert torch.allclose(nll, -m.log_prob(x, y).mean())
    assert not torch.allclose(nll, -m.log_prob(x, (y + 1) % 3).mean())
