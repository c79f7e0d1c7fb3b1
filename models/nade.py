"""Neural autoregressive distribution estimator (NADE, Larochelle & Murray 2011).

With the D subpixels in generation order (raster, then R, G, B) and H hidden units:

    a_1 = c,   a_{i+1} = a_i + W[:, i] x_i,   h_i = sigmoid(a_i),
    p(x_i | x_<i) = sigmoid(alpha_i . h_i + b_i)                      (levels = 2)
    p(x_i | x_<i) = softmax(V_i h_i + b_i) over the L values          (levels L > 2)

The weight W is shared by every conditional, which is what makes NADE cheap: training and
``log_prob`` get every a_i from a cumulative sum over W's columns (with c as its first term),
in one shot on a GPU and in cache-sized blocks of positions on a CPU (``block_size``); sampling
updates a_i one column at a time, O(D * H) per image. For L > 2 the input x_i is the
subpixel's scalar value k / (L - 1), exactly as in the recursion above; only the output becomes
a softmax. A class-conditional NADE (``num_classes``) adds a learned per-class offset to c and b.
"""
from __future__ import annotations

import torch
from torch import nn

from models import register
from models.base import AutoregressiveModel
from models.layers import ClassEmbedding, inverse_cdf


@register("nade")
class NADE(AutoregressiveModel):
    """Hyper-parameter: ``hidden_units`` H (500 in the paper)."""

    graph_sampling = True  # the incremental sampler is pure tensor work: CUDA graphs replay it exactly

    def __init__(self, image_shape, levels: int = 2, num_classes: int | None = None, *, hidden_units: int = 500):
        super().__init__(image_shape, levels, num_classes)
        if int(hidden_units) < 1:
            raise ValueError(f"hidden_units must be positive, got {hidden_units}")
        d, hdim = self.num_dims, int(hidden_units)
        self.out_per_dim = 1 if self.levels == 2 else self.levels
        # Parameters are stored in generation order: row i belongs to the i-th subpixel drawn.
        self.W = nn.Parameter(torch.randn(d, hdim) * 0.01)                              # input weights
        self.c = nn.Parameter(torch.zeros(hdim))                                       # a_1
        self.V = nn.Parameter(torch.randn(d, self.out_per_dim, hdim) / hdim**0.5)      # alpha_i / V_i
        self.b = nn.Parameter(torch.zeros(d, self.out_per_dim))
        self.class_c = None if num_classes is None else ClassEmbedding(num_classes, hdim)
        self.class_b = None if num_classes is None else ClassEmbedding(num_classes, d * self.out_per_dim)
        if num_classes is not None:
            nn.init.normal_(self.class_c.weight, std=0.01)
            nn.init.zeros_(self.class_b.weight)
        self.register_buffer("_order", super().order(), persistent=False)

    def _class_offsets(self, y: torch.Tensor | None, n: int):
        """Per-image additions to c and b, (n, H) and (n, D, L_out); None when unconditional."""
        if self.class_c is None:
            return None, None
        return self.class_c(y), self.class_b(y).view(n, *self.b.shape)

    def _to_image_layout(self, logits: torch.Tensor) -> torch.Tensor:
        """(D, n, L_out) in generation order -> the layout of ``discrete_log_prob``."""
        n = logits.shape[1]
        out = torch.empty_like(logits)
        out[self._order] = logits
        if self.levels == 2:
            return out[:, :, 0].T.reshape(n, *self.image_shape)
        return out.permute(1, 2, 0).reshape(n, self.levels, *self.image_shape)

    #: Positions per block of the training path's cumulative sum. None: on a CPU, as many as
    #: keep one block's (block, n, H) slab near ``SLAB_BYTES``; elsewhere all D at once.
    block_size: int | None = None
    SLAB_BYTES = 2 << 20

    def _block_size(self, n: int, device: torch.device) -> int:
        d = self.num_dims
        if self.block_size is not None:
            return max(1, min(d, int(self.block_size)))
        if device.type != "cpu":
            return d
        return max(2, min(d, self.SLAB_BYTES // (4 * n * self.W.shape[1])))

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[0]
        # Positions first, (D, n, H): the cumulative sum runs over the outer dimension and the
        # output layer is one batched matmul over positions, with no large transposes.
        xo = x.flatten(1)[:, self._order].T                              # (D, n) in generation order
        # a_i = c + sum_{j<i} W[:, j] x_j is a cumulative sum over the D positions whose first
        # term is c (an input fixed at 1 with weight c), so that a never needs a separate add.
        x_prev = torch.cat([xo.new_ones(1, n), xo[:-1]])
        w_prev = torch.cat([self.c[None], self.W[:-1]])
        class_c, class_b = self._class_offsets(y, n)
        b = self.b[:, None] if class_b is None else self.b[:, None] + class_b.transpose(0, 1)
        vt = self.V.transpose(1, 2)
        block = self._block_size(n, x.device)
        if block >= self.num_dims:
            # One shot (GPUs): a (D, n, H) sum, far larger than a CPU's caches.
            a = torch.cumsum(x_prev[:, :, None] * w_prev[:, None, :], dim=0)
            if class_c is not None:
                a = a + class_c
            return self._to_image_layout(torch.baddbmm(b, torch.sigmoid(a), vt))  # (D, n, L_out)
        # Blocked (CPUs): for a block of k positions, the sums within the block are one matmul
        # of the inputs masked to j <= i with the block's weights, plus the running sum before
        # the block (with the class offset); each (n, k, H) slab stays in cache from the sum to
        # the output layer. The running sum moves on by one small matmul as well.
        out, carry = [], class_c
        causal = torch.ones(block, block, dtype=x_prev.dtype, device=x.device).tril_()
        for s in range(0, self.num_dims, block):
            xb, wb = x_prev[s:s + block], w_prev[s:s + block]
            k = xb.shape[0]
            a = ((causal[:k, :k] * xb.T[:, None, :]).reshape(n * k, k) @ wb).view(n, k, -1)
            if carry is not None:
                a.add_(carry[:, None, :])
            carry = xb.T @ wb if carry is None else carry + xb.T @ wb
            out.append(torch.baddbmm(b[s:s + block], torch.sigmoid(a).transpose(0, 1), vt[s:s + block]))
        return self._to_image_layout(torch.cat(out))

    def _sample_steps(self, noise: torch.Tensor, y: torch.Tensor | None, temperature: float):
        """Incremental: a_{i+1} = a_i + W[:, i] x_i, one column per step, O(D * H) per image."""
        n = noise.shape[0]
        class_c, class_b = self._class_offsets(y, n)
        a = self.c.expand(n, -1) if class_c is None else self.c + class_c
        b = self.b.expand(n, -1, -1) if class_b is None else self.b + class_b
        flat_noise = noise.reshape(n, -1)
        x = torch.zeros(n, self.num_dims, device=noise.device)
        for pos, i in enumerate(self.order().tolist()):
            li = torch.sigmoid(a) @ self.V[pos].T + b[:, pos]             # (n, L_out)
            k = inverse_cdf(li[:, 0] if self.levels == 2 else li, flat_noise[:, i], self.levels, temperature)
            xi = self.from_levels(k)
            x[:, i] = xi
            a = a + xi[:, None] * self.W[pos]
            yield x.view(n, *self.image_shape)
