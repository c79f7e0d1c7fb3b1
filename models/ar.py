"""AR(p), the autoregressive process of the course, on the sequence of subpixels (``ar``).

With the C*H*W subpixels read as one sequence x_1, x_2, ... in raster order (R, G, B within a
pixel), each a value k / (L - 1) in [0, 1]:

    x_t = c + phi_1 x_{t-1} + ... + phi_p x_{t-p} + eps_t,        x_t = 0 for t < 1,

with one intercept c (per class for a conditional model) and one set of coefficients phi shared
by every t, and the noise eps_t a logistic (``noise = "logistic"``) or Gaussian (``"gaussian"``)
of learned scale. Since x_t lives on the L levels, eps is *discretised*: level k gets the
noise's mass between the midpoints to its neighbours, the end bins open to -inf and +inf, so

    P(x_t = k | x_<t) = F((v_k + h - mu_t) / s) - F((v_k - h - mu_t) / s),  mu_t = c + sum_i phi_i x_{t-i}

sums to 1 over the L levels (for L = 2 too) and the likelihood is exact. ``logits`` returns
these per-level log-probabilities (a Bernoulli logit for L = 2), so the shared machinery of
``AutoregressiveModel`` (log_prob, the naive sampler, temperature) applies as it is. The fast
sampler computes only mu_t per step: O(p) per subpixel.

From AR(p) to the FVSBN (``fvsbn``): let every position t have its own intercept and its own
coefficients (a logistic regression per subpixel instead of one shared regression), and let p
grow to "everything before t": that is the FVSBN. Its ``order = p`` keeps the per-position
weights but reads only the p previous subpixels, a banded FVSBN; the AR(p) here is the same
band with one weight vector for all positions, p + 2 parameters instead of about p * D.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models import register
from models.base import AutoregressiveModel
from models.layers import ClassEmbedding, discretized_log_prob, inverse_cdf, level_logits

NOISES = ("logistic", "gaussian")


@register("ar")
class AR(AutoregressiveModel):
    """Hyper-parameters: ``p`` (how many previous subpixels; 0 is white noise around c; W * C
    + C reaches the same channel of the pixel above), ``noise`` "logistic" or "gaussian"."""

    graph_sampling = True  # O(p) tensor work per subpixel: CUDA graphs replay the whole sampler

    def __init__(self, image_shape, levels: int = 2, num_classes: int | None = None, *, p: int = 2,
                 noise: str = "logistic"):
        super().__init__(image_shape, levels, num_classes)
        if int(p) < 0:
            raise ValueError(f"p must be a non-negative number of previous subpixels, got {p}")
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {', '.join(NOISES)}, got {noise!r}")
        self.p, self.noise = int(p), noise
        self.c = nn.Parameter(torch.tensor(0.5))
        self.phi = nn.Parameter(torch.zeros(self.p))                 # phi_1 .. phi_p
        self.log_scale = nn.Parameter(torch.tensor(math.log(0.2)))
        self.class_c = None if num_classes is None else ClassEmbedding(num_classes, 1)
        if self.class_c is not None:
            nn.init.zeros_(self.class_c.weight)
        self.register_buffer("_order", super().order(), persistent=False)

    def _intercept(self, y: torch.Tensor | None, n: int) -> torch.Tensor:
        """c, or c + the class's offset: (n, 1)."""
        if self.class_c is None:
            return self.c.expand(n, 1)
        return self.c + self.class_c(y)

    def _lag_weights(self) -> torch.Tensor:
        """phi reversed, for a window x_{t-p} .. x_{t-1} in sequence order."""
        return self.phi.flip(0)

    def means(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """mu_t for every subpixel, (n, D) in sequence (generation) order."""
        n = x.shape[0]
        seq = x.flatten(1)[:, self._order].float()
        mu = self._intercept(y, n).expand(n, self.num_dims)
        if self.p:
            # a product and a sum rather than a matmul: float32 under autocast too, and the
            # very operations of the sampler's single window
            windows = F.pad(seq, (self.p, 0)).unfold(1, self.p, 1)[:, : self.num_dims]  # (n, D, p)
            mu = mu + (windows * self._lag_weights()).sum(-1)
        return mu

    def _log_scale(self) -> torch.Tensor:
        return self.log_scale.clamp(min=-7.0)

    def _level_log_probs(self, mu: torch.Tensor) -> torch.Tensor:
        """mu (...) -> log P(x = k) (..., L) for every level k."""
        k = torch.arange(self.levels, device=mu.device)
        return discretized_log_prob(k, mu[..., None], self._log_scale(), self.levels, self.noise)

    def _to_image(self, seq: torch.Tensor) -> torch.Tensor:
        """(n, D, ...) in sequence order -> (n, C, H, W, ...)."""
        out = torch.empty_like(seq)
        out[:, self._order] = seq
        return out.view(seq.shape[0], *self.image_shape, *seq.shape[2:])

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        lp = self._to_image(self._level_log_probs(self.means(x, y)))  # (n, C, H, W, L)
        return level_logits(lp, self.levels) if self.levels == 2 else lp.permute(0, 4, 1, 2, 3)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The same likelihood as ``discrete_log_prob(logits)``, computed at the observed level only."""
        y = self.check_labels(y, x.shape[0])
        k = self.to_levels(x).flatten(1)[:, self._order]
        lp = discretized_log_prob(k, self.means(x, y), self._log_scale(), self.levels, self.noise)
        return lp.sum(1)

    def _sample_steps(self, noise: torch.Tensor, y: torch.Tensor | None, temperature: float):
        n, d, p = noise.shape[0], self.num_dims, self.p
        c = self._intercept(y, n)[:, 0]
        weights = self._lag_weights()
        seq = noise.new_zeros(n, p + d)           # x in sequence order, zero-padded in front
        x = noise.new_zeros(n, d)
        flat_noise = noise.reshape(n, d)
        for t, i in enumerate(self.order().tolist()):
            mu = c + (seq[:, t : t + p] * weights).sum(-1) if p else c
            logits = level_logits(self._level_log_probs(mu), self.levels)
            k = inverse_cdf(logits, flat_noise[:, i], self.levels, temperature)
            x[:, i] = self.from_levels(k)
            seq[:, p + t] = x[:, i]
            yield x.view(n, *self.image_shape)
