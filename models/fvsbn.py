"""Fully visible sigmoid belief network (FVSBN), and its banded form ``order = p``.

Every conditional p(x_i | x_<i) is a logistic regression on the subpixels before i in raster
order (R, G, B within a pixel): one linear layer whose weight is masked strictly lower
triangular in that order, so every position i has its own weights and its own bias.
``order = 0`` reads every previous subpixel; ``order = p`` reads only the p just before it: a
*banded* FVSBN, still with its own weights per position.

The step from the course's AR(p) (``ar``, models/ar.py): AR(p) predicts x_t from the p
previous values with one intercept c and one set of coefficients phi shared by every t, and a
discretised noise around that mean. Give every position its own intercept and its own
coefficients (a logistic regression, or an L-way softmax, per subpixel) and you have this
banded FVSBN; let p grow to everything before t and you have the FVSBN.

levels = 2: a Bernoulli logit per subpixel. levels L > 2: a softmax over the L values per
subpixel, still linear in the *scalar* values of the previous subpixels. The scalar input keeps
the weight at L * D^2 entries (a one-hot input would need L^2 * D^2: 40 billion at 28x28 with
L = 256) and keeps the model what the course calls it, a regression on the previous values.
"""
from __future__ import annotations

import torch
from torch import nn

from models import register
from models.base import AutoregressiveModel
from models.layers import ClassEmbedding, MaskedLinear, inverse_cdf


@register("fvsbn")
class FVSBN(AutoregressiveModel):
    """Hyper-parameter: ``order`` p (0 = every previous subpixel; p > 0 = the p previous
    subpixels only, with per-position weights: a banded FVSBN, not the shared-weight AR(p))."""

    graph_sampling = True  # the incremental sampler is pure tensor work: CUDA graphs replay it exactly

    def __init__(self, image_shape, levels: int = 2, num_classes: int | None = None, *, order: int = 0):
        super().__init__(image_shape, levels, num_classes)
        if int(order) < 0:
            raise ValueError(f"order must be 0 (every previous subpixel) or a positive p, got {order}")
        self.ar_order = int(order)  # `order` itself is the generation-order method of the base class
        d = self.num_dims
        self.out_per_dim = 1 if self.levels == 2 else self.levels
        # Output feature (l, i) = logit of value l at subpixel i (flattened C, H, W index).
        self.linear = MaskedLinear(d, self.out_per_dim * d, mask=self._mask().repeat(self.out_per_dim, 1))
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)
        self.class_bias = None if num_classes is None else ClassEmbedding(num_classes, self.out_per_dim * d)
        if self.class_bias is not None:
            nn.init.zeros_(self.class_bias.weight)

    def _mask(self) -> torch.Tensor:
        """(D, D) mask: subpixel i reads j when j comes before i in the generation order and,
        for AR(p), at most p places before it."""
        rank = torch.empty(self.num_dims, dtype=torch.long)
        rank[self.order()] = torch.arange(self.num_dims)
        lag = rank[:, None] - rank[None, :]
        allowed = lag > 0
        if self.ar_order:
            allowed &= lag <= self.ar_order
        return allowed.float()

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x.flatten(1) - 1  # centred, so that a blank prefix is not all zeros

    def _bias(self, y: torch.Tensor | None) -> torch.Tensor:
        return self.linear.bias if self.class_bias is None else self.linear.bias + self.class_bias(y)

    def _layout(self, flat: torch.Tensor) -> torch.Tensor:
        n = flat.shape[0]
        if self.levels == 2:
            return flat.view(n, *self.image_shape)
        return flat.view(n, self.levels, *self.image_shape)

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.linear(self._inputs(x))
        if self.class_bias is not None:
            out = out + self.class_bias(y)
        return self._layout(out)

    def _sample_steps(self, noise: torch.Tensor, y: torch.Tensor | None, temperature: float):
        """Subpixel by subpixel, computing only the logits of subpixel i: O(D) per step."""
        n, d, L = noise.shape[0], self.num_dims, self.out_per_dim
        weight = (self.linear.mask * self.linear.weight).view(L, d, d)
        bias = self._bias(y).expand(n, L * d).view(n, L, d)
        x = torch.zeros(n, d, device=noise.device)
        inputs = self._inputs(x)
        flat_noise = noise.reshape(n, d)
        for i in self.order().tolist():
            li = inputs @ weight[:, i, :].T + bias[:, :, i]  # (n, L)
            k = inverse_cdf(li[:, 0] if self.levels == 2 else li, flat_noise[:, i], self.levels, temperature)
            x[:, i] = self.from_levels(k)
            inputs[:, i] = 2 * x[:, i] - 1
            yield x.view(n, *self.image_shape)
