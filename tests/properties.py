"""Property checks shared by the tests of every autoregressive model: exact normalisation by
enumeration, samples against exp(log_prob) by a chi-square test, and the autoregressive
property read off gradients of the logits."""
from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy import stats

import models
from models.layers import discrete_log_prob


def all_images(shape, levels: int) -> torch.Tensor:
    """Every image of ``shape`` (C, H, W) with ``levels`` values per subpixel, in [0, 1]."""
    d = int(np.prod(shape))
    grid = torch.tensor(list(itertools.product(range(levels), repeat=d)), dtype=torch.float32)
    return (grid / (levels - 1)).reshape(-1, *shape)


def image_index(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Position of each image in the enumeration of :func:`all_images`."""
    k = (x.reshape(x.shape[0], -1) * (levels - 1)).round().long()
    weights = levels ** torch.arange(k.shape[1] - 1, -1, -1)
    return (k * weights).sum(1)


def log_probs_of_all(model, y: int | None = None, temperature: float = 1.0) -> torch.Tensor:
    """log p(x) of every image; with a temperature T != 1, the log-probability under which
    the sampler draws at T: the product of the conditionals the model samples from at T
    (``sampling_logits``, then divided by the T left over), each renormalised."""
    x = all_images(model.image_shape, model.levels).to(model.device)
    labels = None if y is None else torch.full((x.shape[0],), y, dtype=torch.long, device=model.device)

    def lp(xb, yb):
        if temperature == 1.0:
            return model.log_prob(xb, yb)
        logits, t = model.sampling_logits(xb, yb, temperature)
        return discrete_log_prob(logits.double() / t, model.to_levels(xb), model.levels)

    with torch.no_grad():
        return torch.cat([lp(xb, None if labels is None else labels[i : i + 1024])
                          for i, xb in zip(range(0, len(x), 1024), x.split(1024))]).double()


def assert_normalised(model, y: int | None = None, atol: float = 1e-4) -> None:
    total = torch.logsumexp(log_probs_of_all(model, y), 0).exp().item()
    assert abs(total - 1.0) < atol, f"sum of p(x) over every image is {total:.6f}, not 1"


def assert_samples_match(model, n: int = 20000, y: int | None = None, seed: int = 0, min_p: float = 1e-3,
                         temperature: float = 1.0) -> None:
    """Chi-square test of ``model.sample`` frequencies against exp(log_prob) (at a temperature
    T != 1: against the product of the tempered conditionals, see :func:`log_probs_of_all`)."""
    p = log_probs_of_all(model, y, temperature).exp().cpu().numpy()
    torch.manual_seed(seed)
    with torch.no_grad():
        labels = None if y is None else torch.full((n,), y, dtype=torch.long)
        xs = model.sample(n, y=labels) if temperature == 1.0 else model.sample(n, y=labels, temperature=temperature)
    assert xs.shape == (n, *model.image_shape)
    levels = model.levels
    on_grid = (xs * (levels - 1) - (xs * (levels - 1)).round()).abs().max().item()
    assert on_grid < 1e-5, "samples are not on the level grid k / (L - 1)"
    counts = np.bincount(image_index(xs.cpu(), levels).numpy(), minlength=len(p))
    expected = p / p.sum() * n
    # Pool the rare images into one bin so that every expected count is at least 5.
    order = np.argsort(expected)
    rare = order[np.cumsum(expected[order]) < 5.0]
    rare = order[: len(rare) + 1] if len(rare) else rare
    keep = np.setdiff1d(np.arange(len(p)), rare)
    obs = np.append(counts[keep], counts[rare].sum()) if len(rare) else counts[keep]
    exp = np.append(expected[keep], expected[rare].sum()) if len(rare) else expected[keep]
    pvalue = stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue
    assert pvalue > min_p, f"samples do not follow exp(log_prob): chi-square p-value {pvalue:.2e}"


def dependencies(model, x: torch.Tensor | None = None, y=None) -> torch.Tensor:
    """dep[i, j] is True when the logits of subpixel i (flattened C, H, W index) have a
    non-zero gradient with respect to the input subpixel j."""
    if x is None:
        x = torch.rand(2, *model.image_shape)
    x = x.clone().to(model.device).requires_grad_(True)
    out = model.logits(x, y)
    n, d = x.shape[0], x[0].numel()
    out = out.reshape(n, -1, d) if model.levels > 2 else out.reshape(n, 1, d)
    dep = torch.zeros(d, d, dtype=torch.bool)
    for i in range(d):
        (g,) = torch.autograd.grad(out[:, :, i].sum(), x, retain_graph=True)
        dep[i] = g.reshape(n, d).abs().sum(0).cpu() != 0
    return dep


def assert_autoregressive(model, order: torch.Tensor | None = None, y=None) -> torch.Tensor:
    """No conditional sees its own subpixel or a later one; returns the dependency matrix."""
    order = model.order() if order is None else order
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    dep = dependencies(model, y=y)
    future = rank[None, :] >= rank[:, None]
    bad = (dep & future).nonzero()
    assert len(bad) == 0, f"subpixel {bad[0, 0].item()} depends on subpixel {bad[0, 1].item()} at or after it"
    return dep


def assert_fast_sampler_matches_naive(model, n: int = 64, seed: int = 1) -> None:
    """The model's own sampler and the naive one give the same images from the same uniforms."""
    noise = torch.rand(n, *model.image_shape, generator=torch.Generator().manual_seed(seed))
    y = None if model.num_classes is None else torch.arange(n) % model.num_classes
    assert torch.equal(model.sample(n, y, noise=noise), model.sample_naive(n, y, noise=noise))


def assert_class_conditional(model, colour_model) -> None:
    """A conditional model (3 classes, shape (1, 2, 2)) is normalised for every class, samples
    the class asked for, and depends on y; ``colour_model`` (5x5 colour) keeps the
    autoregressive property with labels."""
    for y in range(model.num_classes):
        assert_normalised(model, y=y)
    assert_samples_match(model, n=20000, y=model.num_classes - 1)
    assert_autoregressive(colour_model, y=torch.tensor([0, colour_model.num_classes - 1]))
    x = torch.rand(8, *model.image_shape)
    lp = [model.log_prob(x, torch.full((8,), y)) for y in range(2)]
    assert (lp[0] - lp[1]).abs().max() > 1e-3, "log_prob ignores y"
    noise = torch.rand(64, *model.image_shape)
    assert not torch.equal(model.sample(64, 0, noise=noise), model.sample(64, 1, noise=noise)), "samples ignore y"


def assert_learns(model, n: int = 64, steps: int = 30, lr: float = 1e-2, gain: float = 2.0) -> None:
    """A few Adam steps on binary 8x8 images whose columns brighten left to right lower the
    loss by at least ``gain`` nats per image."""
    torch.manual_seed(0)
    x = (torch.rand(n, *model.image_shape) < torch.linspace(0.1, 0.9, model.image_shape[-1])).float()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = model.loss(x)["loss"].item()
    for _ in range(steps):
        loss = model.loss(x)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.loss(x)["loss"].item() < first - gain


#: (image shape, levels) small enough to enumerate: grey and colour binary images, and 4 levels.
CASES = [((1, 3, 3), 2), ((3, 2, 2), 2), ((1, 2, 2), 4)]


# Tiny autoregressive models of every family, for the tests of the sampling hooks
# (temperature, progress frames, soft labels) that every one of them must pass.
TINY_HPARAMS = {
    "fvsbn": {},
    "nade": {"hidden_units": 8},
    "made": {"hidden": [16]},
    "pixelcnn": {"hidden_channels": 12, "num_layers": 1, "head_channels": 12, "first_kernel_size": 3},
    "gated_pixelcnn": {"gated": True, "hidden_channels": 6, "num_layers": 1, "head_channels": 6, "first_kernel_size": 3},
    "row_lstm": {"hidden": 6, "layers": 1, "head_channels": 8},
    "diagonal_bilstm": {"hidden": 4, "layers": 1, "head_channels": 8},
}


def tiny_autoregressive(kind: str, shape=(1, 2, 2), levels: int = 4, num_classes: int | None = None,
                        std: float = 1.0, seed: int = 0, **hparams):
    """A tiny model of ``kind`` (a key of ``TINY_HPARAMS``, optionally with extra hparams)
    with weights drawn large enough (``std``) that its conditionals are far from uniform."""
    torch.manual_seed(seed)
    name = "pixelcnn" if kind == "gated_pixelcnn" else kind
    model = models.build(name, shape, levels, num_classes, **{**TINY_HPARAMS[kind], **hparams})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()
