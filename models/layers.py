"""Layers and likelihood helpers shared by several models: masked linear and convolution
layers (the mask is a buffer multiplied into the weight at every call, so masked weights
never receive gradient and never train), colour-group masks, and discrete likelihoods."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def discrete_log_prob(logits: torch.Tensor, k: torch.Tensor, levels: int) -> torch.Tensor:
    """Log-probability in nats of integer levels ``k`` (n, *S), summed per example.

    levels == 2: ``logits`` has k's shape (one Bernoulli logit per subpixel).
    levels > 2:  ``logits`` has shape (n, L, *S) (a categorical over the L values)."""
    if levels == 2:
        lp = -F.binary_cross_entropy_with_logits(logits, k.to(logits.dtype), reduction="none")
    else:
        lp = -F.cross_entropy(logits, k, reduction="none")
    return lp.flatten(1).sum(1)



def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, levels: int) -> torch.Tensor:
    """Levels drawn by inverting the CDF at uniforms ``u`` (shape n): ``logits`` is (n,) for
    levels == 2 and (n, L) otherwise. Sampling from given uniforms lets two sampling routines
    (naive and cached) be compared image for image."""
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
