"""Layers and likelihood helpers shared by several models: masked linear and convolution
layers (the mask is a buffer multiplied into the weight at every call, so masked weights
never receive gradient and never train), colour-group masks, and discrete likelihoods."""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn


def autocast_off(device: torch.device):
    """Autocast off on ``device``: float32 arithmetic inside a bf16 step. Nothing to enter where
    it is off already (a launch-bound step pays for every context), or where the device has no
    autocast (the meta device, on which models are checked: see tests/test_graph_step.py)."""
    if torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class MaskedLinear(nn.Linear):
    """``F.linear(x, mask * W, b)``; ``mask`` has the weight's shape (out, in)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor | None = None, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("mask", torch.ones(out_features, in_features))
        if mask is not None:
            self.set_mask(mask)

    def set_mask(self, mask: torch.Tensor) -> None:
        self.mask.copy_(mask.to(self.mask.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.mask * self.weight, self.bias)


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed mask buffer of the weight's shape."""

    def __init__(self, *args, mask: torch.Tensor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones_like(self.weight))
        if mask is not None:
            self.mask.copy_(mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.mask * self.weight, self.bias)


def channel_groups(n: int, colors: int) -> torch.Tensor:
    """Colour group (0 = R, 1 = G, 2 = B) of each of ``n`` features: contiguous blocks, so a
    tensor of C*L logits reshaped to (C, L) has channel c in group c."""
    return torch.arange(n) * colors // n


def channel_mask(in_features: int, out_features: int, colors: int, include_same: bool) -> torch.Tensor:
    """(out, in) mask between colour groups at the *same* pixel: output group o may read input
    group i when i < o (mask A, ``include_same=False``) or i <= o (mask B)."""
    gi = channel_groups(in_features, colors)
    go = channel_groups(out_features, colors)
    allowed = gi[None, :] <= go[:, None] if include_same else gi[None, :] < go[:, None]
    return allowed.float()


def class_weights(y: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, K) class weights: the one-hot of integer labels (n,), or soft labels (n, K) as given."""
    if y.is_floating_point():
        return y.to(dtype)
    return F.one_hot(y, num_classes).to(dtype)


class ClassEmbedding(nn.Embedding):
    """A per-class vector (a learned class bias) that also takes soft labels: integer labels
    (n,) look their rows up; float class weights (n, K) mix the rows, ``weights @ table``. A
    one-hot weight row gives exactly the looked-up row (each output is 1 * w plus zeros)."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.is_floating_point():  # in the table's precision, as a lookup is, autocast or not
            with autocast_off(y.device):
                return y.to(self.weight.dtype) @ self.weight
        return super().forward(y)


def discrete_log_prob(logits: torch.Tensor, k: torch.Tensor, levels: int) -> torch.Tensor:
    """Log-probability in nats of integer levels ``k`` (n, *S), summed per example.

    levels == 2: ``logits`` has k's shape (one Bernoulli logit per subpixel).
    levels > 2:  ``logits`` has shape (n, L, *S) (a categorical over the L values)."""
    if levels == 2:
        lp = -F.binary_cross_entropy_with_logits(logits, k.to(logits.dtype), reduction="none")
    else:
        lp = -F.cross_entropy(logits, k, reduction="none")
    return lp.flatten(1).sum(1)



def check_temperature(temperature) -> float:
    """A sampling temperature as a float; ValueError unless it is finite and positive."""
    t = float(temperature)
    if not (t > 0 and t < float("inf")):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return t


def temper(logits: torch.Tensor, temperature: float, levels: int) -> torch.Tensor:
    """logits / T (T = 1 returns ``logits`` untouched, so that sampling at T = 1 is bit for bit
    the untempered sampler). The categorical logits are shifted to a maximum of 0 first, so a
    tiny T gives -inf or 0 and never inf - inf: T -> 0 is the greedy (most probable) level."""
    if temperature == 1.0:
        return logits
    logits = logits.float()
    if levels != 2:
        logits = logits - logits.amax(-1, keepdim=True)
    return logits / temperature


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, levels: int, temperature: float = 1.0) -> torch.Tensor:
    """Levels drawn by inverting the CDF at uniforms ``u`` (shape n): ``logits`` is (n,) for
    levels == 2 and (n, L) otherwise, divided by ``temperature`` first (see :func:`temper`).
    Sampling from given uniforms lets two sampling routines (naive and cached) be compared
    image for image."""
    logits = temper(logits, temperature, levels)
    if levels == 2:
        return (u < torch.sigmoid(logits.float())).long()
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(-1)
    return (cdf < u[:, None]).sum(-1).clamp_(max=levels - 1)


def raster_conv_mask(in_channels: int, out_channels: int, kernel_size: tuple[int, int], colors: int, mask_type: str) -> torch.Tensor:
    """PixelCNN mask (out, in, kh, kw) for a convolution centred on the pixel it predicts:
    every row above, the pixels to the left on the centre row, and at the centre itself only
    earlier colour groups (mask "A", the first layer) or earlier-or-same groups (mask "B")."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel_size
    mask = torch.zeros(out_channels, in_channels, kh, kw)
    ch, cw = kh // 2, kw // 2
    mask[:, :, :ch, :] = 1
    mask[:, :, ch, :cw] = 1
    mask[:, :, ch, cw] = channel_mask(in_channels, out_channels, colors, include_same=mask_type == "B")
    return mask


# -- discretised continuous distributions on the level grid ------------------------------------
def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - e^d) for d < 0 (clamped just below 0, so that the gradient stays finite)."""
    return torch.log(-torch.expm1(d.clamp(max=-1e-12)))


def discretized_log_prob(k: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, levels: int,
                         kind: str = "logistic", low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """log P(level k) of a continuous ``kind`` ("logistic" or "gaussian") with location ``loc``
    and scale exp(``log_scale``), binned on the grid v_k = low + (high - low) k / (L - 1): level
    k gets the mass between the midpoints to its neighbours, and the end bins are open (level
    0 takes everything below, level L-1 everything above), so the L masses sum to 1 for every
    loc and scale. Elementwise with broadcasting; pass ``k = torch.arange(L)`` and loc[..., None]
    for the log-probabilities of every level. Inner bins are computed as log F(a) + log(1 -
    F(b)/F(a)) on the side of the tail, which stays accurate far from the location."""
    half = 0.5 * (high - low) / (levels - 1)
    j = k.to(loc.dtype)
    inv_scale = torch.exp(-log_scale)
    # Edge j (between levels j and j+1) is low + (2j + 1) half, computed by the same expression
    # as the upper edge of level j and the lower edge of level j+1, so that the masses telescope.
    a = (low + (2 * j + 1) * half - loc) * inv_scale  # upper edge
    b = (low + (2 * j - 1) * half - loc) * inv_scale  # lower edge
    if kind == "logistic":
        log_cdf_a, log_sf_b = F.logsigmoid(a), F.logsigmoid(-b)
        # s(a) - s(b) = s(a) s(-b) (1 - e^(b - a)), with a - b = 2 half / scale
        inner = log_cdf_a + log_sf_b + _log1mexp(b - a)
    elif kind == "gaussian":
        log_cdf_a, log_sf_b = torch.special.log_ndtr(a), torch.special.log_ndtr(-b)
        below = log_cdf_a + _log1mexp(torch.special.log_ndtr(b) - log_cdf_a)    # Phi(a) - Phi(b)
        above = log_sf_b + _log1mexp(torch.special.log_ndtr(-a) - log_sf_b)    # Phi(-b) - Phi(-a)
        inner = torch.where(a + b > 0, above, below)
    else:
        raise ValueError(f"kind must be 'logistic' or 'gaussian', got {kind!r}")
    return torch.where(k <= 0, log_cdf_a, torch.where(k >= levels - 1, log_sf_b, inner))


def level_logits(log_probs: torch.Tensor, levels: int) -> torch.Tensor:
    """Per-level log-probabilities (..., L) -> what ``inverse_cdf`` and ``discrete_log_prob``
    take: themselves for L > 2, the Bernoulli logit log P(1) - log P(0) for L = 2."""
    if levels == 2:
        return log_probs[..., 1] - log_probs[..., 0]
    return log_probs


# -- the discretised mixture of logistics (Salimans et al. 2017, PixelCNN++) -------------------
def mixture_param_count(colors: int, mixtures: int) -> int:
    """Parameters per pixel: per component a mixture logit, a location and a log-scale per
    channel, and a coefficient per pair of channels (c' < c) for the linear dependence."""
    return mixtures * (1 + 2 * colors + colors * (colors - 1) // 2)


def mixture_param_colors(colors: int, mixtures: int) -> torch.Tensor:
    """Colour group of each of the P parameters of a pixel (the layout ``_mixture_parts`` reads):
    the mixture logits 0 (every channel's conditional weighs the components by them), channel
    c's location, log-scale and coefficients on earlier channels c. A head whose parameter j
    reads the features of groups <= its colour then gives channel c's conditional exactly the
    pixel's channels before c: R's parameters see none of the pixel, G's see R, B's see R and G."""
    per_group = [0, *range(colors), *range(colors), *(c for c in range(1, colors) for _ in range(c))]
    return torch.tensor(per_group).repeat_interleave(mixtures)


def mixture_head_mask(features: int, colors: int, mixtures: int) -> torch.Tensor:
    """(P, features) mask of a mixture head's last layer: parameter j reads the features of the
    colour groups up to its colour (``mixture_param_colors``)."""
    return (channel_groups(features, colors)[None, :] <= mixture_param_colors(colors, mixtures)[:, None]).float()


def _mixture_parts(params: torch.Tensor, x: torch.Tensor, levels: int, temperature: float):
    """Split ``params`` (..., P) of pixels whose values are ``x`` (..., C) in [0, 1] into the
    mixture logits (..., M), the per-channel locations (..., C, M) (channel c's shifted by
    sum_{c' < c} coef * x_c' on the centred grid [-1, 1]), log-scales (..., C, M), and the
    observed levels (..., C). Temperature T divides the mixture logits and multiplies the
    scales (T = 1 leaves both untouched)."""
    colors = x.shape[-1]
    groups = 1 + 2 * colors + colors * (colors - 1) // 2
    p = params.reshape(*params.shape[:-1], groups, -1).float()
    logit_pi, loc, log_scale, coef = p[..., 0, :], p[..., 1 : 1 + colors, :], p[..., 1 + colors : 1 + 2 * colors, :], p[..., 1 + 2 * colors :, :]
    log_scale = log_scale.clamp(min=-7.0)
    if temperature != 1.0:
        logit_pi = logit_pi / temperature
        log_scale = log_scale + math.log(temperature)
    k = (x * (levels - 1)).round().long().clamp_(0, levels - 1)
    v = 2 * k.to(p.dtype) / (levels - 1) - 1
    coef = torch.tanh(coef)
    means, pair = [loc[..., 0, :]], 0
    for c in range(1, colors):
        m = loc[..., c, :]
        for earlier in range(c):
            m = m + coef[..., pair, :] * v[..., earlier, None]
            pair += 1
        means.append(m)
    return logit_pi, torch.stack(means, -2), log_scale, k


def mixture_log_prob(params: torch.Tensor, x: torch.Tensor, levels: int) -> torch.Tensor:
    """log p(pixel) (...,) of pixels with values ``x`` (..., C): log sum_m pi_m prod_c
    P(x_c | m, x_<c), each P a logistic binned on the L levels with open end bins."""
    logit_pi, means, log_scale, k = _mixture_parts(params, x, levels, 1.0)
    lp = discretized_log_prob(k[..., None], means, log_scale, levels, low=-1.0, high=1.0)  # (..., C, M)
    return torch.logsumexp(torch.log_softmax(logit_pi, -1) + lp.sum(-2), -1)


def mixture_conditionals(params: torch.Tensor, x: torch.Tensor, levels: int, temperature: float = 1.0) -> torch.Tensor:
    """log P(x_c = k | x_<c) for every channel c and level k, (..., C, L), of the mixture with
    ``params`` (..., P) given the pixel's values ``x`` (..., C) (channel c reads only the
    channels before it): the components are reweighted by how well each explained x_<c,
    w_m proportional to pi_m prod_{c' < c} P(x_c' | m), then mixed. Their sum over the
    channels at the observed levels is ``mixture_log_prob``. At temperature T: see
    ``_mixture_parts``."""
    logit_pi, means, log_scale, k = _mixture_parts(params, x, levels, temperature)
    grid = torch.arange(levels, device=params.device)
    lp = discretized_log_prob(grid, means[..., None], log_scale[..., None], levels, low=-1.0, high=1.0)  # (..., C, M, L)
    observed = lp.gather(-1, k[..., None, None].expand(*k.shape, lp.shape[-2], 1))[..., 0]  # (..., C, M)
    before = F.pad(torch.cumsum(observed[..., :-1, :], -2), (0, 0, 1, 0))  # sum over c' < c
    weights = torch.log_softmax(logit_pi[..., None, :] + before, -1)  # (..., C, M)
    return torch.logsumexp(weights[..., None] + lp, -2)


def mixture_inverse_cdf(params: torch.Tensor, x: torch.Tensor, channel: int, u: torch.Tensor, levels: int,
                        temperature: float = 1.0) -> torch.Tensor:
    """Levels (n,) of channel ``channel`` drawn as ``inverse_cdf`` at uniforms ``u`` from its
    conditional under the mixture ``params`` (n, P), given the pixel's values ``x`` (n, C) (only
    the channels before ``channel`` are read): the fast samplers' step. T tempers the mixture."""
    lp = mixture_conditionals(params, x, levels, temperature)[:, channel]
    return inverse_cdf(level_logits(lp, levels), u, levels)


def mixture_image_logits(params: torch.Tensor, x: torch.Tensor, levels: int, temperature: float = 1.0) -> torch.Tensor:
    """Per-subpixel conditionals of a mixture head as logits in the layout of
    ``discrete_log_prob``: ``params`` (n, H, W, P), images ``x`` (n, C, H, W) -> (n, L, C, H, W)
    log-probabilities (the Bernoulli logit (n, C, H, W) for L = 2)."""
    lp = mixture_conditionals(params, x.permute(0, 2, 3, 1), levels, temperature)  # (n, H, W, C, L)
    if levels == 2:
        return level_logits(lp, 2).permute(0, 3, 1, 2)
    return lp.permute(0, 4, 3, 1, 2)


def mixture_image_log_prob(params: torch.Tensor, x: torch.Tensor, levels: int) -> torch.Tensor:
    """log p(x) (n,) of images x (n, C, H, W) under a mixture head's ``params`` (n, H, W, P)."""
    return mixture_log_prob(params, x.permute(0, 2, 3, 1), levels).flatten(1).sum(1)


OUTPUTS = ("categorical", "logistic_mixture")


def check_output(output: str, mixtures: int) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if int(mixtures) < 1:
        raise ValueError(f"mixtures must be a positive number of logistic components, got {mixtures}")
