"""The model contract every architecture implements (see README, "The model contract").

Images are float tensors in [0, 1] of shape (n, C, H, W). A discrete model with ``levels`` L
reads level k as k / (L - 1) and returns samples on that grid; ``levels=2`` is binarised data.
``loss`` returns a dict whose "loss" entry is minimised (mean nats per image); ``log_prob``
returns nats per image (exact for autoregressive models, a lower bound for latent models).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.layers import discrete_log_prob, inverse_cdf


class GenerativeModel(nn.Module):
    registered_name = "?"
    #: True when ``log_prob`` is the exact log-likelihood (autoregressive models).
    exact_likelihood = True

    def __init__(self, image_shape, levels: int = 2, num_classes: int | None = None):
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
        if int(levels) < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.levels = int(levels)
        self.num_classes = None if num_classes is None else int(num_classes)

    # -- shapes and the level grid -------------------------------------------------------
    @property
    def num_dims(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def to_levels(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] floats -> integer levels in {0, ..., L-1}."""
        return (x * (self.levels - 1)).round().long().clamp_(0, self.levels - 1)

    def from_levels(self, k: torch.Tensor) -> torch.Tensor:
        return k.float() / (self.levels - 1)

    def bits_per_dim(self, nats: torch.Tensor) -> torch.Tensor:
        return nats / (self.num_dims * math.log(2))

    # -- labels ----------------------------------------------------------------------------
    def sample_labels(self, n: int, y: torch.Tensor | int | None) -> torch.Tensor | None:
        """Labels for ``sample``: None for unconditional models; a conditional model given no
        labels draws the classes in turn (0, 1, ..., K-1, 0, ...)."""
        if self.num_classes is None:
            return None
        if y is None:
            return torch.arange(n, device=self.device) % self.num_classes
        y = torch.as_tensor(y, device=self.device).long()
        return y.expand(n).clone() if y.dim() == 0 else y

    def check_labels(self, y: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if self.num_classes is None:
            return None
        if y is None:
            raise ValueError(f"model {self.registered_name!r} is class-conditional: pass y (integer labels)")
        y = torch.as_tensor(y, device=self.device).long()
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},), got {tuple(y.shape)}")
        return y

    # -- the contract ----------------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Default for exact-likelihood models: the mean negative log-likelihood in nats."""
        nll = -self.log_prob(x, y).mean()
        return {"loss": nll, "nll": nll}

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class AutoregressiveModel(GenerativeModel):
    """An exact model p(x) = prod_i p(x_i | x_<i) over the C*H*W subpixels.

    Subclasses implement ``logits(x, y)`` in the layout of ``layers.discrete_log_prob``
    ((n, C, H, W) for levels 2, (n, L, C, H, W) otherwise), where the logits at subpixel i
    depend only on subpixels before i in ``order()``; and ``_sample(noise, y)``, their fast
    sampler, which must draw subpixel i as ``inverse_cdf(logits_i, noise_i)`` so that it gives
    the same images as ``sample_naive`` from the same noise."""

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def order(self) -> torch.Tensor:
        """Flattened (C, H, W) indices of the subpixels in generation order; by default raster
        order over pixels, and R, G, B within a pixel."""
        c, h, w = self.image_shape
        idx = torch.arange(c * h * w).reshape(c, h, w)
        return idx.permute(1, 2, 0).reshape(-1)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = self.check_labels(y, x.shape[0])
        return discrete_log_prob(self.logits(x, y), self.to_levels(x), self.levels)

    def _noise(self, n: int, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            noise = torch.rand((n, *self.image_shape), device=self.device)
        return noise.to(self.device)

    def sample(self, n: int, y=None, noise: torch.Tensor | None = None) -> torch.Tensor:
        y = self.sample_labels(n, y)
        with torch.inference_mode():
            return self._sample(self._noise(n, noise), y)

    def _sample(self, noise: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self._sample_naive(noise, y)

    def sample_naive(self, n: int, y=None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Reference sampler: one full forward pass per subpixel (the baseline of benchmarks)."""
        y = self.sample_labels(n, y)
        with torch.inference_mode():
            return self._sample_naive(self._noise(n, noise), y)

    def _sample_naive(self, noise: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        n = noise.shape[0]
        c, h, w = self.image_shape
        x = torch.zeros(n, c * h * w, device=noise.device)
        flat_noise = noise.reshape(n, -1)
        for i in self.order().tolist():
            logits = self.logits(x.view(n, c, h, w), y)
            li = logits.reshape(n, -1)[:, i] if self.levels == 2 else logits.reshape(n, self.levels, -1)[:, :, i]
            x[:, i] = self.from_levels(inverse_cdf(li, flat_noise[:, i], self.levels))
        return x.view(n, c, h, w)
