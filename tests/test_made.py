"""MADE: exact normalisation, the autoregressive property of every mask set, samples that
follow log_prob, masks that never train, and order-agnostic training."""
from __future__ import annotations

import pytest
import torch

import models
from tests.properties import all_images, assert_normalised, assert_samples_match, dependencies


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


def test_logits_are_the_masked_mlp_written_out():
    """The logits of mask set k are relu(... relu(x (M0 W0)^T + b0 + P0 y) ...) (M W)^T + b + P y,
    with every bias and the label projection added, each to its own layer. Kills the biases
    dropped, ``mask / weight`` for ``mask * weight``, the label projection subtracted or added
    to another layer or sliced at ``hidden[1]``, and a bias on the projection (hidden widths
    differ so that ``hidden[0]`` and ``hidden[1]`` cannot be mixed up)."""
    torch.manual_seed(0)
    m = models.build("made", (1, 2, 3), 4, num_classes=3, hidden=(5, 7), num_masks=2)
    x, y = torch.rand(4, 1, 2, 3), torch.tensor([0, 2, 1, 2])
    proj = torch.nn.functional.one_hot(y, 3).float() @ m.label_proj.weight.t()
    for k in range(2):
        h = x.reshape(4, -1)
        for i, layer in enumerate(m.layers):
            h = h @ (getattr(m, f"mask_{i}")[k] * layer.weight).t() + layer.bias
            h = torch.relu(h + proj[:, :5] if i == 0 else h)
        out = h @ (m.mask_2[k] * m.output.weight).t() + m.output.bias + proj[:, 5:]
        assert torch.allclose(m.logits(x, y, mask=k), out.view(4, 4, 1, 2, 3), atol=1e-6)


def test_orders_follow_order_and_order_agnostic():
    """Mask set 0 is in raster order for ``order="natural"`` and in a random order for
    ``"random"``; with ``order_agnostic`` every later set draws its own order, without it every
    set keeps the first one's. Kills ``and`` for ``or``, ``!=`` for ``==`` and ``k >= 0`` or
    ``k > 1`` for ``k > 0`` in that choice."""
    raster = torch.arange(16)
    natural = models.build("made", (1, 4, 4), hidden=(32,), num_masks=3)
    assert torch.equal(natural.order(0), raster)
    assert all(not torch.equal(natural.order(k), raster) for k in (1, 2))
    assert not torch.equal(natural.order(1), natural.order(2))
    fixed = models.build("made", (1, 4, 4), hidden=(32,), num_masks=3, order_agnostic=False)
    assert all(torch.equal(fixed.order(k), raster) for k in range(3))
    assert not torch.equal(fixed.mask_0[0], fixed.mask_0[1]), "connectivity-agnostic sets should differ"
    for agnostic in (True, False):
        random = models.build("made", (1, 4, 4), hidden=(32,), order="random", order_agnostic=agnostic)
        assert not torch.equal(random.order(0), raster)
        assert sorted(random.order(0).tolist()) == raster.tolist()


def test_mask_sets_are_a_function_of_the_seed_alone():
    """The same ``seed`` gives the same orders and masks whatever the global generator holds,
    another seed gives others. Kills the degrees or permutations drawn from the global
    generator (``generator=None`` or dropped)."""
    builds = []
    for global_seed, seed in [(1, 7), (2, 7), (1, 8)]:
        torch.manual_seed(global_seed)
        builds.append(models.build("made", (1, 4, 4), hidden=(24, 24), num_masks=2, order="random", seed=seed))
    a, b, c = (dict(m.named_buffers()) for m in builds)
    for name in ("orders", "mask_0", "mask_1", "mask_2"):
        assert torch.equal(a[name], b[name]), f"{name} depends on the global generator"
    assert not torch.equal(a["orders"], c["orders"]) and not torch.equal(a["mask_1"], c["mask_1"])


@pytest.mark.parametrize("shape,hidden", [((1, 4, 4), (6, 5, 4, 4)), ((1, 1, 2), (6,))])
def test_no_hidden_unit_is_cut_off(shape, hidden):
    """Germain et al. draw a hidden unit's degree from [min degree of the layer below, D - 1],
    so every unit reads at least one unit below and every last-layer unit feeds an output.
    Checked over ten seeds; kills the lower bound read from another layer (``degrees[+1]``,
    ``degrees[-2]``) and the upper bound raised to D (``low + 2``, which with D = 2 draws D)."""
    for seed in range(10):
        m = models.build("made", shape, hidden=hidden, num_masks=2, seed=seed)
        for k in range(2):
            for i in range(len(hidden)):
                rows = getattr(m, f"mask_{i}")[k].sum(1)
                assert (rows > 0).all(), f"seed {seed}, set {k}: a unit of hidden layer {i} reads nothing"
            feeds = getattr(m, f"mask_{len(hidden)}")[k].sum(0)
            assert (feeds > 0).all(), f"seed {seed}, set {k}: a last hidden unit feeds no output"


def test_a_meta_build_has_the_shapes_of_a_real_one():
    """The workbench validates a preset by building it on the meta device: every buffer and
    parameter there has the shape and dtype of the CPU build, orders included (one per set).
    Kills the meta path's ``break`` for ``continue``, its wrong sizes and the real path taken on
    meta."""
    kwargs = dict(num_classes=3, hidden=(6, 5), num_masks=3)
    real = models.build("made", (1, 2, 3), 4, **kwargs)
    with torch.device("meta"):
        meta = models.build("made", (1, 2, 3), 4, **kwargs)
    shapes = {n: (t.shape, t.dtype) for n, t in real.state_dict().items()}
    assert {n: (t.shape, t.dtype) for n, t in meta.state_dict().items()} == shapes
    assert all(t.is_meta for t in meta.state_dict().values())


@pytest.mark.parametrize("num_masks", [2, 3])
def test_training_loss_is_the_nll_of_the_step_mask_set_with_labels(num_masks):
    """In training, step s scores the batch under mask set s mod K alone, with the batch's
    labels. Kills ``num_masks > 2`` (two sets would train on the ensemble) and the labels
    dropped from the training branch."""
    torch.manual_seed(0)
    m = models.build("made", (1, 2, 2), 2, num_classes=3, hidden=(8,), num_masks=num_masks).train()
    x, y = torch.randint(2, (6, 1, 2, 2)).float(), torch.tensor([0, 1, 2, 0, 1, 2])
    for step in range(num_masks + 1):
        loss = m.loss(x, y)["loss"]
        k = step % num_masks
        expected = -models.layers.discrete_log_prob(m.logits(x, y, mask=k), m.to_levels(x), 2).mean()
        assert torch.allclose(loss, expected), f"step {step} did not train mask set {k} with the labels"


def test_a_step_that_picks_a_mask_set_is_not_capturable():
    """A CUDA graph would replay one mask set forever: only a single-set MADE is capturable."""
    assert models.build("made", (1, 2, 2), hidden=(8,)).loss_capturable()
    assert not any(models.build("made", (1, 2, 2), hidden=(8,), num_masks=k).loss_capturable() for k in (2, 3))


def test_hidden_width_one_is_allowed_and_zero_is_not():
    """The boundary of the width check: kills ``< 2`` and ``<= 1`` for ``< 1``."""
    assert_normalised(models.build("made", (1, 2, 2), hidden=(1, 3)))
    with pytest.raises(ValueError, match="positive layer width"):
        models.build("made", (1, 2, 2), hidden=(3, 0))


class PinnedMask:
    """MADE sampled with every image pinned to mask set k, scored by that set alone."""

    def __init__(self, model, k):
        self.m, self.k = model, k
        self.image_shape, self.levels, self.device = model.image_shape, model.levels, model.device

    def sample(self, n, y=None):
        return self.m.sample(n, y, masks=[self.k] * n)

    def log_prob(self, x, y=None):
        logits = self.m.logits(x, None if y is None else self.m.check_labels(y, x.shape[0]), mask=self.k)
        return models.layers.discrete_log_prob(logits, self.m.to_levels(x), self.levels)


def test_pinned_mask_samples_follow_that_set_and_the_labels():
    """``sample(masks=...)`` draws from the pinned set's own model, for the given class: its
    frequencies match that set's exp(log p_k(x | y)) by enumeration. Kills the masks or the
    labels dropped on the pinned path."""
    torch.manual_seed(0)
    m = models.build("made", (1, 2, 2), 2, num_classes=3, hidden=(16,), num_masks=2)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3)  # sharper conditionals: set 0, set 1 and each class are told apart
    assert_samples_match(PinnedMask(m, 1), n=20000, y=2)


def test_pinned_sampling_of_one_set_is_the_plain_sampler():
    """With one mask set, pinning it changes nothing: the same noise, labels and temperature
    give the same images. Kills the noise, labels or temperature dropped on the pinned path."""
    torch.manual_seed(0)
    m = models.build("made", (1, 2, 3), 4, num_classes=3, hidden=(16,))
    y, u = torch.tensor([2, 0, 1, 2, 0]), torch.rand(5, 1, 2, 3)
    plain = m.sample(5, y, noise=u, temperature=0.6)
    assert torch.equal(m.sample(5, y, noise=u, temperature=0.6, masks=[0] * 5), plain)
    assert not torch.equal(m.sample(5, y, noise=u, temperature=1.0, masks=[0] * 5), plain)


@pytest.mark.parametrize("masks", [[0, 1], [0, 1, 2, 0], [0, -1, 1], [0, 2, 1]])
def test_pinned_masks_outside_the_sets_are_refused(masks):
    """Three images need three indices in 0..K-1 (K = 2): kills the length or range checks
    loosened (``and``, ``|``, ``<=``)."""
    m = models.build("made", (1, 2, 2), hidden=(8,), num_masks=2)
    with pytest.raises(ValueError, match=r"3 mask set indices in 0\.\.1"):
        m.sample(3, masks=masks)


def test_every_parameter_takes_part_in_the_loss():
    """Each weight, bias and the label projection gets a gradient from the loss: kills a bias
    added to the label projection that the logits never read (``bias=True``)."""
    torch.manual_seed(0)
    m = models.build("made", (1, 2, 2), 4, num_classes=3, hidden=(6, 5))
    m.loss(torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 2]))["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_samples_of_a_two_set_ensemble_follow_the_ensemble():
    """Each image draws its mask set uniformly, so the samples follow log (1/2 sum_k p_k(x)), not
    p_0 alone (weights tripled so that the two sets' models differ). Kills ``num_masks > 2`` for
    ``> 1`` in the sampler's choice, which draws every image of a two-set MADE from set 0."""
    torch.manual_seed(0)
    m = models.build("made", (1, 2, 2), 2, hidden=(16,), num_masks=2, order="random")
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3)
    p0, p1 = (PinnedMask(m, k).log_prob(all_images((1, 2, 2), 2)).exp() for k in range(2))
    assert (p0 - p1).abs().sum() > 0.2, "the two sets' models are too close to tell apart"
    assert_samples_match(m, n=20000)


@pytest.mark.parametrize("num_masks", [1, 2])
def test_the_loss_reports_its_nll_under_that_name(num_masks):
    """The Trainer logs and plots the terms a loss returns by name: MADE returns ``loss`` and
    ``nll``, equal (an exact likelihood has no other term). Kills the ``nll`` key renamed."""
    m = models.build("made", (1, 2, 2), hidden=(8,), num_masks=num_masks)
    out = m.loss(torch.randint(2, (3, 1, 2, 2)).float())
    assert set(out) == {"loss", "nll"} and torch.equal(out["loss"], out["nll"])
