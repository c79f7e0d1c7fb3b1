"""VQ-VAE (``vqvae``, van den Oord et al. 2017) with the usual codebook-health machinery.

The encoder maps x to a grid of vectors z_e (7x7 for 28x28 inputs by default); each is
replaced by its nearest codebook vector e_k among K; the decoder sees z_q through the
straight-through estimator (its gradient is copied to z_e unchanged). Per image,

    loss = -log p(x | z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2

with the norms summed over the grid. Options: EMA codebook updates instead of the codebook
loss; k-means initialisation of the codebook from the first training batch; restart of dead
codes (unused for ``usage_window`` training steps) to encoder outputs of the current batch.
Every call logs the perplexity of the batch's code usage and the number of distinct codes
used over the last ``usage_window`` training steps. All training-time state (EMA statistics,
usage, step counter, init flag) lives in buffers, so checkpoints capture it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models import register
from models.base import GenerativeModel
from models.layers import autocast_off
from models.vae import Likelihood, num_downsamples, resolve_likelihood


def code_counts(codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    """How often each of the K codes occurs in ``codes``, as floats (K,). Unlike
    ``torch.bincount``, it never waits for a GPU (bincount reads the largest code first)."""
    flat = codes.flatten()
    return torch.zeros(num_codes, device=codes.device).index_add_(0, flat, torch.ones(flat.shape, device=codes.device))


def perplexity(codes: torch.Tensor, num_codes: int, counts: torch.Tensor | None = None) -> torch.Tensor:
    """exp(-sum_k p_k log p_k) of the code frequencies: K for uniform usage, 1 for one code."""
    if counts is None:
        return _perplexity(code_counts(codes, num_codes), codes.numel())
    return _perplexity(counts, counts.sum().clamp(min=1))


def _perplexity(counts: torch.Tensor, total) -> torch.Tensor:
    # entr(p) = -p log p (0 at p = 0): the same value as -xlogy(p, p), in fewer kernels
    return torch.special.entr(counts / (max(total, 1) if isinstance(total, int) else total)).sum().exp()


@torch.no_grad()
def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest row of ``codebook`` (K, D) for each row of ``z`` (N, D)."""
    # ||z||^2 - 2 z.e + ||e||^2, the first two terms in one addmm (exactly as z_sq - 2 * (z @ e^T))
    dist = torch.addmm(z.pow(2).sum(1, keepdim=True), z, codebook.t(), alpha=-2) + codebook.pow(2).sum(1)
    return dist.argmin(1)


def random_rows(n: int, k: int, device) -> torch.Tensor:
    """k distinct indices among n (with repeats only when k > n)."""
    if k <= n:
        return torch.randperm(n, device=device)[:k]
    return torch.randint(n, (k,), device=device)


def kmeans(z: torch.Tensor, k: int, iters: int = 10) -> torch.Tensor:
    """Lloyd's k-means on the rows of z, started from k random rows; empty clusters keep
    their previous centre."""
    centres = z[random_rows(len(z), k, z.device)].clone()
    for _ in range(iters):
        assign = nearest_codes(z, centres)
        counts = torch.bincount(assign, minlength=k).to(z.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, z)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation of (n, D, h, w) vectors against a (K, D) codebook.

    In training mode (and only then) each call also: initialises the codebook by k-means on
    the first batch (``kmeans_init``); restarts dead codes (``restart_dead``); records usage;
    and, with ``ema``, moves the codebook to the exponential moving average of the vectors
    assigned to each code (the counts Laplace-smoothed by ``eps``):

        N_k <- decay N_k + (1 - decay) n_k,   m_k <- decay m_k + (1 - decay) sum_{i: k_i = k} z_i,
        e_k = m_k / N~_k,   N~_k = (N_k + eps) / (sum N + K eps) * sum N.

    The EMA statistics start as one pseudo-observation of each initial code (N = 1, m = e)."""

    def __init__(self, num_codes: int, dim: int, *, ema: bool = True, decay: float = 0.99, kmeans_init: bool = True,
                 restart_dead: bool = True, usage_window: int = 100, eps: float = 1e-5):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if num_codes < 1 or dim < 1 or usage_window < 1:
            raise ValueError("num_codes, code_dim and usage_window must be positive")
        self.num_codes, self.dim = num_codes, dim
        self.ema, self.decay, self.eps = ema, decay, eps
        self.kmeans_init, self.restart_dead, self.usage_window = kmeans_init, restart_dead, usage_window
        init = torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        self.embedding = nn.Parameter(init, requires_grad=not ema)  # EMA mode: moved by the EMA, not by gradients
        if ema:
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", self.embedding.detach().clone())
        self.register_buffer("initialised", torch.tensor(not kmeans_init))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # training calls so far
        self.register_buffer("last_used", torch.full((num_codes,), -(1 << 40), dtype=torch.long))
        self.register_buffer("last_reset", torch.zeros(num_codes, dtype=torch.long))

    # -- state updates (training mode only) --------------------------------------------------
    # Two host-side shortcuts keep steps where nothing happens free of device syncs: whether the
    # codebook is known to be initialised, and how many more training calls cannot find a dead
    # code (a code's last use or reset only ever moves forward). load_state_dict forgets both.
    _known_initialised = False
    _calls_before_dead_check = 0

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialised, self._calls_before_dead_check = False, 0

    @torch.no_grad()
    def _set_codes(self, which: torch.Tensor, vectors: torch.Tensor) -> None:
        self.embedding.data[which] = vectors
        if self.ema:
            self.ema_sum[which] = vectors
            self.ema_count[which] = 1.0
        self.last_reset[which] = self.step

    def dead_codes(self) -> torch.Tensor:
        """Codes neither used nor restarted in the last ``usage_window`` training steps."""
        return (self.step - torch.maximum(self.last_used, self.last_reset)) >= self.usage_window

    @torch.no_grad()
    def restart(self, z: torch.Tensor) -> int:
        """Reset dead codes to random rows of z (N, D), recent encoder outputs; returns how many."""
        dead = self.dead_codes().nonzero().flatten()
        if len(dead):
            self._set_codes(dead, z[random_rows(len(z), len(dead), z.device)])
        return len(dead)

    @torch.no_grad()
    def _restart_when_due(self, z: torch.Tensor) -> int:
        """``restart(z)``, but only on calls where a code can have died since the last look."""
        if self._calls_before_dead_check > 0:
            self._calls_before_dead_check -= 1
            return 0
        touched = torch.maximum(self.last_used, self.last_reset)
        alive = touched > self.step - self.usage_window
        # one read: the step, the oldest touch, and the oldest once this call's dead codes are reset
        step, oldest, oldest_after = torch.stack(
            [self.step, touched.min(), torch.where(alive, touched, self.step).min()]).tolist()
        restarted = self.restart(z) if step - oldest >= self.usage_window else 0
        self._calls_before_dead_check = max(oldest_after + self.usage_window - step - 1, 0)
        return restarted

    @torch.no_grad()
    def ema_update(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """The EMA step from this batch's code counts (K,) and sums of the vectors assigned to
        each code (K, D)."""
        torch._foreach_mul_([self.ema_count, self.ema_sum], self.decay)
        self.ema_count.add_(counts, alpha=1 - self.decay)
        self.ema_sum.add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total
        torch.div(self.ema_sum, smoothed[:, None], out=self.embedding.data)

    def codes_used(self) -> torch.Tensor:
        """Distinct codes used over the last ``usage_window`` training steps."""
        return ((self.step - self.last_used) < self.usage_window).sum()

    # -- quantisation ------------------------------------------------------------------------
    def codes(self, z_e: torch.Tensor) -> torch.Tensor:
        """(n, D, h, w) -> nearest codes (n, h, w), with distances in float32 even under autocast."""
        n, d, h, w = z_e.shape
        with autocast_off(z_e.device):
            return nearest_codes(z_e.float().permute(0, 2, 3, 1).reshape(-1, d), self.embedding).view(n, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(n, h, w) codes -> (n, D, h, w) codebook vectors."""
        return F.embedding(codes, self.embedding).permute(0, 3, 1, 2)

    def forward(self, z_e: torch.Tensor) -> dict[str, torch.Tensor]:
        """z_q with the straight-through gradient, the codes, the codebook and commitment terms
        (the squared distance between z_e and z_q summed over the grid, averaged over the
        images), and the usage statistics (``codes_used`` and ``restarted`` as floats). Runs in
        float32."""
        # The training step is launch-bound on a GPU: every op here (even a no-op cast) costs
        # host time, so those are skipped where they would do nothing.
        with autocast_off(z_e.device):
            return self._quantize(z_e if z_e.dtype == torch.float32 else z_e.float())

    # Cached tensors (not state): ones, the increments of the code counts (read only), and a
    # (K,) float scratch tensor. Each call would otherwise spend an op making them. They are
    # made as normal tensors even under inference_mode, so that training may use them later.
    _ones_cache = _scratch_cache = None

    def _ones(self, n: int, device) -> torch.Tensor:
        ones = self._ones_cache
        if ones is None or ones.shape[0] != n or ones.device != device:
            with torch.inference_mode(False):
                ones = self._ones_cache = torch.ones(n, device=device)
        return ones

    def _scratch(self, device) -> torch.Tensor:
        scratch = self._scratch_cache
        if scratch is None or scratch.device != device:
            with torch.inference_mode(False):
                scratch = self._scratch_cache = torch.empty(self.num_codes, device=device)
        return scratch

    def _quantize(self, z_e: torch.Tensor) -> dict[str, torch.Tensor]:
        n, d, h, w = z_e.shape
        training = self.training and torch.is_grad_enabled()
        with_ema = training and self.ema
        z_last = z_e.detach().permute(0, 2, 3, 1)  # (n, h, w, D)
        if with_ema:
            # the vectors with a column of ones: one index_add_ then gives each code's count and sum
            padded = z_e.new_ones(n * h * w, d + 1)
            flat = padded[:, :d]
            flat.view(n, h, w, d).copy_(z_last)
        else:
            flat = z_last.reshape(-1, d)
        restarted = 0
        if training:
            # kmeans_init=False starts (and stays) initialised: no host-device sync to check.
            if self.kmeans_init and not self._known_initialised:
                if not bool(self.initialised):
                    self._set_codes(torch.arange(self.num_codes, device=flat.device), kmeans(flat, self.num_codes))
                    self.initialised.fill_(True)
                self._known_initialised = True
            if self.restart_dead:
                restarted = self._restart_when_due(flat)
        flat_codes = nearest_codes(flat, self.embedding)
        codes = flat_codes.view(n, h, w)  # = self.codes(z_e)
        # (n, h, w, D), z_q = self.lookup(codes) permuted back. index_select, not embedding: its
        # gradient is one index_add_, where embedding's sorts the codes first on a GPU.
        z_q_last = self.embedding.index_select(0, flat_codes).view(n, h, w, d)
        z_q = z_q_last.permute(0, 3, 1, 2)
        if with_ema:
            stats = torch.zeros(self.num_codes, d + 1, device=flat.device).index_add_(0, flat_codes, padded)
            counts = stats[:, d]
        else:
            counts = torch.zeros(self.num_codes, device=flat.device).index_add_(0, flat_codes, self._ones(len(flat_codes), flat.device))
        # The two terms: means over the images of the grid's summed squared distances, in one
        # reduction each (mse_loss's backward is a single kernel). Equal in value, they differ in
        # what they move; where the codebook gets no gradient (EMA), the commitment's value serves.
        commitment = F.mse_loss(z_e, z_q.detach(), reduction="sum") / n
        if z_q_last.requires_grad:
            codebook = F.mse_loss(z_q_last, z_last, reduction="sum") / n  # laid out like z_q_last: read in place
        else:
            codebook = commitment.detach()
        out = {
            "z_q": z_e + (z_q - z_e).detach(),
            "codes": codes,
            "codebook": codebook,
            "commitment": commitment,
            "perplexity": _perplexity(counts, len(flat_codes)),
        }
        if training:
            step = self.step.add_(1)
            # A mask, not codes.unique(): unique waits for the GPU to learn its output's size. And
            # where, not masked_fill_: that reads a tensor fill value to the host on CUDA.
            torch.where(counts > 0, step, self.last_used, out=self.last_used)
            if with_ema:
                self.ema_update(counts, stats[:, :d])
        # = self.codes_used(), compared straight into floats
        out["codes_used"] = torch.lt(self.step - self.last_used, self.usage_window, out=self._scratch(flat.device)).sum()
        out["restarted"] = torch.full((), float(restarted), device=z_e.device)  # a fill, not a host copy
        return out


class ResBlock(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def vq_encoder(in_channels: int, d: int, channels: int, res_channels: int, res_blocks: int, code_dim: int) -> nn.Sequential:
    """d stride-2 4x4 convolutions (the first at half width), a 3x3, residual blocks, 1x1 to D."""
    layers, c = [], in_channels
    for i in range(d):
        width = channels // 2 if i < d - 1 else channels
        layers += [nn.Conv2d(c, width, 4, stride=2, padding=1), nn.ReLU()]
        c = width
    layers.append(nn.Conv2d(c, channels, 3, padding=1))
    layers += [ResBlock(channels, res_channels) for _ in range(res_blocks)]
    layers += [nn.ReLU(), nn.Conv2d(channels, code_dim, 1)]
    return nn.Sequential(*layers)


def vq_decoder(code_dim: int, d: int, channels: int, res_channels: int, res_blocks: int, out_channels: int) -> nn.Sequential:
    """The mirror of ``vq_encoder``: 3x3, residual blocks, d transposed convolutions up (at half
    width), the last one straight to the likelihood's parameters (a 3x3 when d = 0)."""
    layers = [nn.Conv2d(code_dim, channels, 3, padding=1)]
    layers += [ResBlock(channels, res_channels) for _ in range(res_blocks)]
    layers.append(nn.ReLU())
    if d == 0:
        return nn.Sequential(*layers, nn.Conv2d(channels, out_channels, 3, padding=1))
    c = channels
    for _ in range(d - 1):
        layers += [nn.ConvTranspose2d(c, channels // 2, 4, stride=2, padding=1), nn.ReLU()]
        c = channels // 2
    layers.append(nn.ConvTranspose2d(c, out_channels, 4, stride=2, padding=1))
    return nn.Sequential(*layers)


@register("vqvae")
class VQVAE(GenerativeModel):
    """VQ-VAE with a K-code codebook over an (h, w) grid; unconditional (make the prior
    ``vqvae_prior`` class-conditional instead).

    Hyper-parameters: ``num_codes`` K, ``code_dim`` D, ``channels``, ``res_channels``,
    ``res_blocks``, ``downsamples`` (at most this many halvings: 28 -> 7 with 2), ``beta``
    (commitment weight), ``ema`` / ``decay`` (EMA codebook instead of the codebook loss),
    ``kmeans_init``, ``restart_dead`` / ``usage_window``, and the reconstruction
    ``likelihood`` / ``sigma`` / ``learn_sigma`` as in ``vae``."""

    exact_likelihood = False

    def __init__(
        self,
        image_shape,
        levels: int = 2,
        num_classes: int | None = None,
        *,
        num_codes: int = 128,
        code_dim: int = 16,
        channels: int = 64,
        res_channels: int = 32,
        res_blocks: int = 2,
        downsamples: int = 2,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        kmeans_init: bool = True,
        restart_dead: bool = True,
        usage_window: int = 100,
        likelihood: str = "auto",
        sigma: float = 0.1,
        learn_sigma: bool = False,
    ):
        super().__init__(image_shape, levels, num_classes)
        if self.num_classes is not None:
            raise ValueError("vqvae is unconditional; set [model] conditional = true on the prior (vqvae_prior) instead")
        if channels < 2 or res_channels < 1 or res_blocks < 0 or downsamples < 0 or beta < 0:
            raise ValueError("channels >= 2, res_channels >= 1, res_blocks >= 0, downsamples >= 0 and beta >= 0 are required")
        c, h, w = self.image_shape
        d = num_downsamples(h, w, most=downsamples)
        self.code_shape = (h >> d, w >> d)
        self.num_codes, self.beta = int(num_codes), float(beta)
        self.likelihood = Likelihood(resolve_likelihood(likelihood, self.levels), c, self.levels, sigma, learn_sigma)
        self.encoder = vq_encoder(c, d, channels, res_channels, res_blocks, code_dim)
        self.quantizer = VectorQuantizer(num_codes, code_dim, ema=ema, decay=decay, kmeans_init=kmeans_init,
                                         restart_dead=restart_dead, usage_window=usage_window)
        self.decoder = vq_decoder(code_dim, d, channels, res_channels, res_blocks, self.likelihood.out_channels)

    @property
    def prior_log_prob(self) -> float:
        """log p(codes) under the uniform prior: -h w log K."""
        return -self.code_shape[0] * self.code_shape[1] * math.log(self.num_codes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_e, the encoder's output before quantisation: (n, code_dim, h, w)."""
        return self.encoder(x)

    def quantize(self, z_e: torch.Tensor) -> torch.Tensor:
        """Nearest codes (n, h, w) of vectors z_e (n, code_dim, h, w); no state changes."""
        return self.quantizer.codes(z_e)

    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest codes of x: LongTensor (n, h, w). Never changes the quantiser's state."""
        return self.quantize(self.encode(x))

    def decode_latent(self, z_e: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """Images for vectors z_e (n, code_dim, h, w), e.g. interpolated between two encodings:
        each vector is quantised to its nearest code first, then decoded as ``decode_codes``."""
        return self.decode_codes(self.quantize(z_e), mean=mean)

    def decode_codes(self, codes: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """Images for codes (n, h, w): E[x | codes] by default, a draw on the level grid with
        ``mean=False``."""
        out = self.decoder(self.quantizer.lookup(codes)).float()
        return self.likelihood.mean(out) if mean else self.likelihood.sample(out)

    def recon_log_prob(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """log p(x | z_q(codes)) in nats per image."""
        return self.likelihood.log_prob(self.decoder(self.quantizer.lookup(codes)).float(), x)

    def loss_capturable(self) -> bool:
        # a dead-code restart is decided on the host, on the steps where a code can have died;
        # the k-means start happens at the first step, which a graph's warm-up runs eagerly
        return not self.quantizer.restart_dead

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        q = self.quantizer(self.encoder(x))
        out = self.decoder(q["z_q"])
        if out.dtype != torch.float32:
            out = out.float()
        if self.likelihood.kind == "bce":  # -log_prob(...).mean() in one reduction, without its negations
            recon = F.binary_cross_entropy_with_logits(out, x, reduction="sum") / x.shape[0]
        else:
            recon = -self.likelihood.log_prob(out, x).mean()
        codebook, commitment = q["codebook"], q["commitment"]
        loss = torch.add(recon, commitment, alpha=self.beta)
        if not self.quantizer.ema:
            loss = loss + codebook
        recon = recon.detach()
        return {
            "loss": loss,
            "recon": recon,
            "codebook": codebook,
            "commitment": commitment,
            "elbo": self.prior_log_prob - recon,
            "perplexity": q["perplexity"],
            "codes_used": q["codes_used"],  # a float already
            "restarted": q["restarted"],
        }

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """ELBO with q(z | x) a point mass on the encoder's codes and a uniform prior over the
        K codes at each of the h*w positions: log p(x | z_q(x)) - h w log K <= log p(x).
        (A trained prior over codes, ``vqvae_prior``, tightens it.)"""
        return self.recon_log_prob(x, self.encode_codes(x)) + self.prior_log_prob

    def sample(self, n: int, y=None, *, mean: bool = False) -> torch.Tensor:
        """Codes drawn from the uniform prior, decoded (a draw on the level grid, or the mean).
        Meaningful samples need a learned prior: see ``vqvae_prior``."""
        with torch.inference_mode():
            codes = torch.randint(self.num_codes, (n, *self.code_shape), device=self.device)
            if n == 0:
                return torch.zeros(0, *self.image_shape, device=self.device)
            return torch.cat([self.decode_codes(c, mean=mean) for c in codes.split(1024)])
