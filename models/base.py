"""The model contract every architecture implements (see README, "The model contract").

Images are float tensors in [0, 1] of shape (n, C, H, W). A discrete model with ``levels`` L
reads level k as k / (L - 1) and returns samples on that grid; ``levels=2`` is binarised data.
``loss`` returns a dict whose "loss" entry is minimised (mean nats per image); ``log_prob``
returns nats per image (exact for autoregressive models, a lower bound for latent models).
"""
from __future__ import annotations

import math
import weakref

import torch
from torch import nn

from models.cudagraph import CudaGraphs
from models.layers import check_temperature, discrete_log_prob, inverse_cdf


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
    # Labels are integer classes (n,) or soft labels: float class weights (n, K), or (K,) for
    # every image. A conditional model mixes what the class conditions (its class embeddings,
    # biases or one-hot inputs) with the weights, so weight 1 on class k is exactly label k.
    def _labels(self, y, n: int) -> torch.Tensor:
        k = self.num_classes
        y = torch.as_tensor(y, device=self.device)
        if y.is_floating_point() and y.dim() >= 1:
            if y.dim() == 1 and y.shape[0] == k:
                y = y.expand(n, k)
            if y.dim() != 2 or y.shape != (n, k):
                raise ValueError(f"soft labels must be class weights of shape ({n}, {k}) or ({k},), got {tuple(y.shape)}")
            if not torch.isfinite(y).all():
                raise ValueError("soft labels must be finite class weights")
            return y.float().contiguous()
        y = y.long()
        if y.dim() == 0:
            y = y.expand(n).clone()
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},), got {tuple(y.shape)}")
        return y

    def sample_labels(self, n: int, y: torch.Tensor | int | None) -> torch.Tensor | None:
        """Labels for ``sample``: None for unconditional models; a conditional model given no
        labels draws the classes in turn (0, 1, ..., K-1, 0, ...). Returns long (n,) labels or
        float (n, K) class weights."""
        if self.num_classes is None:
            return None
        if y is None:
            return torch.arange(n, device=self.device) % self.num_classes
        return self._labels(y, n)

    def check_labels(self, y: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """Labels of a batch of n images: long (n,) or float class weights (n, K) (also (K,))."""
        if self.num_classes is None:
            return None
        if y is None:
            raise ValueError(f"model {self.registered_name!r} is class-conditional: pass y (integer labels)")
        return self._labels(y, n)

    # -- the contract ----------------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Default for exact-likelihood models: the mean negative log-likelihood in nats."""
        nll = -self.log_prob(x, y).mean()
        return {"loss": nll, "nll": nll}

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def loss_capturable(self) -> bool:
        """Whether a training step's ``loss`` (forward and backward) can be captured in a CUDA
        graph and replayed: it never waits for the device (no ``.item()``, ``.tolist()``,
        ``nonzero``, data-dependent Python control flow), makes no tensor from host data, and
        launches the same kernels for the same input shapes. The Trainer's ``[train] cuda_graph
        = "auto"`` replays the step of such models on CUDA (``workbench.accel.GraphStep``);
        tests check the claim on the meta device."""
        return False


class AutoregressiveModel(GenerativeModel):
    """An exact model p(x) = prod_i p(x_i | x_<i) over the C*H*W subpixels.

    Subclasses implement ``logits(x, y)`` in the layout of ``layers.discrete_log_prob``
    ((n, C, H, W) for levels 2, (n, L, C, H, W) otherwise), where the logits at subpixel i
    depend only on subpixels before i in ``order()``; and ``_sample_steps(noise, y,
    temperature)``, their fast sampler: a generator that draws one subpixel per step as
    ``inverse_cdf(logits_i, noise_i, levels, temperature)`` and yields the image so far after
    each, so that it gives the same images as ``sample_naive`` from the same noise. ``sample``
    and ``sample_progress`` both run it: one code path for images and progress frames."""

    #: True where ``_sample_steps`` meets models.cudagraph's conditions (no host synchronisation,
    #: no random numbers of its own): ``sample`` on CUDA then replays it from a CUDA graph.
    graph_sampling = False

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def loss_capturable(self) -> bool:
        return True  # the default loss, -log_prob(x).mean(), is pure tensor work

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
        if tuple(noise.shape) != (n, *self.image_shape):
            raise ValueError(f"noise must have shape {(n, *self.image_shape)}, got {tuple(noise.shape)}")
        return noise.to(self.device)

    def sample(self, n: int, y=None, noise: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n images; ``noise`` (n, C, H, W) uniforms make them reproducible; ``temperature``
        divides the logits (1 is exact, towards 0 greedy)."""
        y, t = self.sample_labels(n, y), check_temperature(temperature)
        with torch.inference_mode():
            noise = self._noise(n, noise)
            if not self.graph_sampling:
                return self._sample_all(noise, y, t)
            # On CUDA, from the second call on, a replay of the whole sampler captured in a CUDA
            # graph (models.cudagraph): the same kernels on the same values, so the same images.
            state = tuple(v.data_ptr() for v in (*self.parameters(), *self.buffers()))
            key = ("sample", t, self.training, y is None, state)
            labels = () if y is None else (y,)
            return _sample_graphs(self).run(key, lambda u, *ys: self._sample_all(u, ys[0] if ys else None, t), noise, *labels)

    def _sample_all(self, noise: torch.Tensor, y: torch.Tensor | None, temperature: float) -> torch.Tensor:
        return _last(self._sample_steps(noise, y, temperature))

    def sample_progress(self, n: int, y=None, noise: torch.Tensor | None = None, temperature: float = 1.0, every: int = 1):
        """Generator of (done, x): the images (a fresh (n, C, H, W) copy, subpixels not yet drawn
        at 0) after every ``every`` subpixels in generation order, and once at the end (done =
        C*H*W). Frames come from the fast sampler itself; the last equals ``sample`` from the
        same noise."""
        if int(every) < 1:
            raise ValueError(f"every must be a positive number of subpixels, got {every}")
        every, y, t = int(every), self.sample_labels(n, y), check_temperature(temperature)
        steps = self._sample_steps(self._noise(n, noise), y, t)
        done, total = 0, self.num_dims
        while True:
            with torch.inference_mode():  # only while the sampler runs, never across a yield
                x = next(steps, None)
                frame = None if x is None else x.clone()
            if x is None:
                return
            done += 1
            if done % every == 0 or done == total:
                yield done, frame

    def _sample_steps(self, noise: torch.Tensor, y: torch.Tensor | None, temperature: float):
        return self._naive_steps(noise, y, temperature)

    def sample_naive(self, n: int, y=None, noise: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Reference sampler: one full forward pass per subpixel (the baseline of benchmarks)."""
        y, t = self.sample_labels(n, y), check_temperature(temperature)
        with torch.inference_mode():
            return _last(self._naive_steps(self._noise(n, noise), y, t))

    def sampling_logits(self, x: torch.Tensor, y: torch.Tensor | None, temperature: float) -> tuple[torch.Tensor, float]:
        """The logits the naive sampler draws from, and the temperature still to apply to them
        in ``inverse_cdf``. A head that tempers its own parameters (the logistic mixture)
        returns already-tempered logits and 1."""
        return self.logits(x, y), temperature

    def _naive_steps(self, noise: torch.Tensor, y: torch.Tensor | None, temperature: float):
        n = noise.shape[0]
        c, h, w = self.image_shape
        x = torch.zeros(n, c * h * w, device=noise.device)
        flat_noise = noise.reshape(n, -1)
        for i in self.order().tolist():
            logits, t = self.sampling_logits(x.view(n, c, h, w), y, temperature)
            li = logits.reshape(n, -1)[:, i] if self.levels == 2 else logits.reshape(n, self.levels, -1)[:, :, i]
            x[:, i] = self.from_levels(inverse_cdf(li, flat_noise[:, i], self.levels, t))
            yield x.view(n, c, h, w)


def _last(steps):
    """The last image a step generator yields: the finished sample."""
    x = None
    for x in steps:
        pass
    return x


_GRAPHS: "weakref.WeakKeyDictionary[AutoregressiveModel, CudaGraphs]" = weakref.WeakKeyDictionary()


def _sample_graphs(model: AutoregressiveModel) -> CudaGraphs:
    """The model's CUDA graphs of ``sample``, kept beside it (not in it: a module's state stays
    its tensors, and copies of the model do not share graphs)."""
    graphs = _GRAPHS.get(model)
    if graphs is None:
        graphs = _GRAPHS[model] = CudaGraphs(max_graphs=2)
    return graphs
