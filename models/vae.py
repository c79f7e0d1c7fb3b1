"""Variational autoencoders: the VAE (``vae``) and the conditional VAE (``cvae``).

    q(z | x[, y]) = N(mu(x), diag sigma(x)^2)      encoder, reparameterised z = mu + sigma * eps
    p(z)          = N(0, I)
    p(x | z[, y]) = an observation model chosen by ``likelihood`` (see ``Likelihood``)

``loss`` is the negative ELBO with the analytic KL, the KL weighted by ``beta`` times a linear
warm-up over ``kl_warmup_steps`` training steps (counted in a buffer, so a resumed run carries
on where it stopped). ``log_prob`` is the importance-weighted bound (IWAE) with K samples;
K = 1 is the ELBO. The conditional VAE joins a one-hot y to the encoder's input (as constant
planes for the convolutional encoder) and concatenates it to z before decoding.

The module also holds the observation models shared with the VQ-VAE.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models import register
from models.base import GenerativeModel
from models.layers import check_temperature, class_weights, discretized_log_prob

LIKELIHOODS = ("bce", "mse", "mae", "logistic", "categorical")
LOG_2PI = math.log(2 * math.pi)


# -- closed forms ------------------------------------------------------------------------------
def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in nats, summed over the last dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def discretized_logistic_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, levels: int) -> torch.Tensor:
    """Elementwise log P(level of x) under a logistic(loc, scale) binned at the grid k/(L-1):
    bin k covers [x - h, x + h] with h = 1/(2(L-1)), the end bins reach -inf and +inf, so the
    L probabilities sum to one (``layers.discretized_log_prob``, whose bin edges are shared
    exactly by neighbouring bins, and which stays accurate when a bin holds almost all the mass)."""
    k = (x * (levels - 1)).round()
    return discretized_log_prob(k, loc, log_scale, levels, "logistic")


# -- observation models ------------------------------------------------------------------------
def resolve_likelihood(name: str, levels: int) -> str:
    """"auto" is Bernoulli for binarised data and the discretised logistic otherwise."""
    if name == "auto":
        return "bce" if levels == 2 else "logistic"
    if name not in LIKELIHOODS:
        raise ValueError(f"likelihood must be 'auto' or one of {', '.join(LIKELIHOODS)}; got {name!r}")
    if name == "bce" and levels != 2:
        raise ValueError(
            "likelihood 'bce' is a Bernoulli and needs levels=2; for grey or colour data use "
            "'logistic' or 'categorical' (probability masses), or 'mse' / 'mae' (densities)"
        )
    return name


class Likelihood(nn.Module):
    """p(x | decoder output), one distribution per subpixel, independent given the latent.

    bce          Bernoulli (levels=2): one logit per subpixel. A probability mass.
    logistic     discretised logistic over the L levels: location and log-scale per subpixel.
                 A probability mass, so bits/dim compare with the autoregressive models.
    categorical  an L-way softmax per subpixel (like PixelCNN's output). A probability mass.
    mse          Gaussian N(mean, sigma^2) with sigma fixed (``sigma``) or learned.
    mae          Laplace(mean, b) with the scale b fixed (``sigma``) or learned.

    mse and mae are *densities* on [0, 1]^D evaluated at the level grid, not probability
    masses: their log p(x) (and so ``log_prob`` of a model using them) can be positive and is
    not comparable to the bits/dim of a discrete model. ``sample`` clamps a draw to [0, 1] and
    rounds it to the level grid, which is how such a model is shown as an image."""

    def __init__(self, kind: str, channels: int, levels: int, sigma: float = 0.1, learn_sigma: bool = False):
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.kind, self.channels, self.levels = kind, channels, levels
        self.params_per_channel = {"logistic": 2, "categorical": levels}.get(kind, 1)
        log_sigma = torch.tensor(math.log(sigma))
        if kind in ("mse", "mae") and learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def out_channels(self) -> int:
        return self.channels * self.params_per_channel

    def _split(self, out: torch.Tensor) -> torch.Tensor:
        """(n, P*C, H, W) -> (n, P, C, H, W)."""
        n, _, h, w = out.shape
        return out.view(n, self.params_per_channel, self.channels, h, w)

    def log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | out) in nats, summed per image: (n,)."""
        if self.kind == "bce":
            lp = -F.binary_cross_entropy_with_logits(out, x, reduction="none")
        elif self.kind == "mse":
            ls = self.log_sigma
            lp = -0.5 * ((x - out) * torch.exp(-ls)).pow(2) - ls - 0.5 * LOG_2PI
        elif self.kind == "mae":
            ls = self.log_sigma
            lp = -(x - out).abs() * torch.exp(-ls) - ls - math.log(2.0)
        elif self.kind == "logistic":
            p = self._split(out)
            lp = discretized_logistic_log_prob(x, p[:, 0], p[:, 1].clamp(min=-7.0), self.levels)
        else:
            k = (x * (self.levels - 1)).round().long()
            lp = -F.cross_entropy(self._split(out), k, reduction="none")
        return lp.flatten(1).sum(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """E[x | out] in [0, 1] (for mse/mae: the location, clamped to [0, 1])."""
        if self.kind == "bce":
            return torch.sigmoid(out)
        if self.kind in ("mse", "mae"):
            return out.clamp(0.0, 1.0)
        grid = torch.arange(self.levels, device=out.device, dtype=out.dtype) / (self.levels - 1)
        if self.kind == "categorical":
            probs = torch.softmax(self._split(out), dim=1)
            return torch.einsum("nlchw,l->nchw", probs, grid)
        # discretised logistic: E[k] = sum_j P(k > j) over the L-1 inner bin edges
        p = self._split(out)
        loc, inv_scale = p[:, 0], torch.exp(-p[:, 1].clamp(min=-7.0))
        exceed = torch.zeros_like(loc)
        for edge in (grid[:-1] + 0.5 / (self.levels - 1)).tolist():
            exceed += torch.sigmoid((loc - edge) * inv_scale)
        return exceed / (self.levels - 1)

    def sample(self, out: torch.Tensor) -> torch.Tensor:
        """A draw of x on the level grid k/(L-1)."""
        L = self.levels
        if self.kind == "bce":
            return torch.bernoulli(torch.sigmoid(out))
        if self.kind == "categorical":
            gumbel = -torch.log(-torch.log(torch.rand_like(self._split(out)).clamp_(1e-20, 1.0)))
            return (self._split(out) + gumbel).argmax(1).float() / (L - 1)
        if self.kind == "logistic":
            p = self._split(out)
            u = torch.rand_like(p[:, 0]).clamp_(1e-6, 1 - 1e-6)
            x = p[:, 0] + torch.exp(p[:, 1].clamp(min=-7.0)) * (torch.log(u) - torch.log1p(-u))
        elif self.kind == "mse":
            x = out + torch.exp(self.log_sigma) * torch.randn_like(out)
        else:
            x = out + torch.distributions.Laplace(0.0, torch.exp(self.log_sigma)).sample(out.shape)
        return (x.clamp(0.0, 1.0) * (L - 1)).round() / (L - 1)


# -- networks ----------------------------------------------------------------------------------
def num_downsamples(h: int, w: int, most: int = 2) -> int:
    """How many times (at most ``most``) both sides halve exactly: 28x28 -> 2 (7x7 features),
    2x2 -> 1, 3x3 -> 0. The convolutional nets use this so they build at any shape."""
    d = 0
    while d < most and h % 2 == 0 and w % 2 == 0:
        h, w, d = h // 2, w // 2, d + 1
    return d


def widths(channels: int, d: int) -> list[int]:
    """Feature widths by resolution: full size, then after each halving (doubling each time)."""
    return [channels] + [channels << i for i in range(d)]


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions (28 -> 14 -> 7, widths channels, 2 * channels; a stride-1 3x3
    when the sides do not halve), then an MLP head."""

    def __init__(self, in_channels: int, size: tuple[int, int], channels: int, hidden: int, out_features: int):
        super().__init__()
        d = num_downsamples(*size)
        width = widths(channels, d)
        if d == 0:
            layers = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU()]
        else:
            layers, c = [], in_channels
            for w in width[1:]:
                layers += [nn.Conv2d(c, w, 4, stride=2, padding=1), nn.ReLU()]
                c = w
        h, w = size[0] >> d, size[1] >> d
        layers += [nn.Flatten(), nn.Linear(width[-1] * h * w, hidden), nn.ReLU(), nn.Linear(hidden, out_features)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """The mirror of ``ConvEncoder``: an MLP to the smallest feature map, then stride-2 4x4
    transposed convolutions up, the last one straight to the likelihood's parameters (a 3x3
    convolution when the sides do not halve)."""

    def __init__(self, in_features: int, size: tuple[int, int], channels: int, hidden: int, out_channels: int):
        super().__init__()
        d = num_downsamples(*size)
        width = widths(channels, d)
        self.shape = (width[-1], size[0] >> d, size[1] >> d)
        self.head = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(self.shape)), nn.ReLU())
        if d == 0:
            layers = [nn.Conv2d(channels, out_channels, 3, padding=1)]
        else:
            layers = []
            for c_in, c_out in zip(width[:1:-1], width[-2:0:-1]):
                layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
            layers.append(nn.ConvTranspose2d(width[1], out_channels, 4, stride=2, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.head(z).view(-1, *self.shape))


def mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_features)
    )


# -- the models --------------------------------------------------------------------------------
@register("vae")
class VAE(GenerativeModel):
    """Gaussian-latent VAE; given ``num_classes`` it is the conditional VAE (see ``cvae``).

    Hyper-parameters: ``latent_dim``; ``arch`` "conv" or "mlp"; ``channels`` (conv width
    after the first halving, doubled after the second); ``hidden`` (MLP width);
    ``likelihood`` "auto" (bce for levels=2, logistic otherwise), "bce", "logistic",
    "categorical", "mse" or "mae"; ``sigma`` / ``learn_sigma`` for mse and mae; ``beta`` (KL
    weight); ``kl_warmup_steps`` (beta ramps linearly from 0); ``iw_samples`` (K of the IWAE
    bound in ``log_prob``)."""

    exact_likelihood = False
    requires_labels = False
    _chunk_elements = 1 << 20  # decoder outputs per chunk of the IWAE bound (memory cap)

    def __init__(
        self,
        image_shape,
        levels: int = 2,
        num_classes: int | None = None,
        *,
        latent_dim: int = 16,
        arch: str = "conv",
        channels: int = 32,
        hidden: int = 256,
        likelihood: str = "auto",
        sigma: float = 0.1,
        learn_sigma: bool = False,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        iw_samples: int = 16,
    ):
        super().__init__(image_shape, levels, num_classes)
        if self.requires_labels and self.num_classes is None:
            raise ValueError(f"{self.registered_name} is class-conditional: set num_classes (preset: [model] conditional = true)")
        if arch not in ("conv", "mlp"):
            raise ValueError(f"arch must be 'conv' or 'mlp', got {arch!r}")
        if latent_dim < 1 or channels < 1 or hidden < 1 or iw_samples < 1:
            raise ValueError("latent_dim, channels, hidden and iw_samples must be positive")
        if beta < 0 or kl_warmup_steps < 0:
            raise ValueError("beta and kl_warmup_steps must be non-negative")
        self.latent_dim, self.arch = int(latent_dim), arch
        self.beta, self.kl_warmup_steps, self.iw_samples = float(beta), int(kl_warmup_steps), int(iw_samples)
        c, h, w = self.image_shape
        k = self.num_classes or 0
        self.likelihood = Likelihood(resolve_likelihood(likelihood, self.levels), c, self.levels, sigma, learn_sigma)
        out_c = self.likelihood.out_channels
        if arch == "conv":
            self.encoder = ConvEncoder(c + k, (h, w), channels, hidden, 2 * latent_dim)
            self.decoder = ConvDecoder(latent_dim + k, (h, w), channels, hidden, out_c)
        else:
            self.encoder = mlp(c * h * w + k, hidden, 2 * latent_dim)
            self.decoder = nn.Sequential(mlp(latent_dim + k, hidden, out_c * h * w), nn.Unflatten(1, (out_c, h, w)))
        # training steps seen, for the KL warm-up (a buffer: saved in checkpoints)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    # -- conditioning ------------------------------------------------------------------------
    def _one_hot(self, y: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """The one-hot of labels, or soft labels' class weights as they are."""
        return None if y is None else class_weights(y, self.num_classes, dtype)

    def _encode(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        onehot = self._one_hot(y, x.dtype)
        if self.arch == "conv":
            if onehot is not None:
                x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
            h = self.encoder(x)
        else:
            h = x.flatten(1)
            h = self.encoder(h if onehot is None else torch.cat([h, onehot], 1))
        mu, logvar = h.float().chunk(2, dim=1)  # float32 under autocast too
        return mu, logvar

    def _decode(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Parameters of p(x | z, y) in the layout of ``self.likelihood``."""
        onehot = self._one_hot(y, z.dtype)
        return self.decoder(z if onehot is None else torch.cat([z, onehot], 1)).float()

    # -- latent operations -------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z | x[, y]), each (n, latent_dim)."""
        return self._encode(x, self.check_labels(y, x.shape[0]))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None, mean: bool = True) -> torch.Tensor:
        """Images for latents z (n, latent_dim): E[x | z] by default, a draw on the level grid
        with ``mean=False``."""
        out = self._decode(z, self.check_labels(y, z.shape[0]))
        return self.likelihood.mean(out) if mean else self.likelihood.sample(out)

    # -- the contract ------------------------------------------------------------------------
    def kl_weight(self) -> float:
        """beta times the warm-up factor min(1, steps / kl_warmup_steps)."""
        return float(self._kl_weight())

    def _kl_weight(self) -> torch.Tensor | float:
        # on the device during the warm-up: the step never waits for it (a CUDA graph replays it)
        if self.kl_warmup_steps == 0:
            return self.beta
        return self.beta * (self.steps / self.kl_warmup_steps).clamp(max=1.0)

    def loss_capturable(self) -> bool:
        return True

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        y = self.check_labels(y, x.shape[0])
        mu, logvar = self._encode(x, y)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = -self.likelihood.log_prob(self._decode(z, y), x).mean()
        kl = gaussian_kl(mu, logvar).mean()
        weight = self._kl_weight()
        if self.training and torch.is_grad_enabled():
            self.steps += 1
        elbo = -(recon + kl)
        return {
            "loss": recon + weight * kl,
            "elbo": elbo.detach(),
            "recon": recon.detach(),
            "kl": kl.detach(),
            "beta": torch.full((), weight, device=x.device) if isinstance(weight, float) else weight.float(),
        }

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None, samples: int | None = None) -> torch.Tensor:
        """IWAE bound log (1/K) sum_k p(x, z_k) / q(z_k | x), z_k ~ q(z | x), in nats per image:
        a lower bound on log p(x) that rises towards it with K (``samples``, default
        ``iw_samples``); K = 1 is a one-sample ELBO. Computed in chunks of samples. For the
        mse/mae likelihoods it bounds a log *density*, not a log probability."""
        k = int(samples or self.iw_samples)
        n = x.shape[0]
        y = self.check_labels(y, n)
        mu, logvar = self._encode(x, y)
        std = torch.exp(0.5 * logvar)
        per_image = self.likelihood.out_channels * self.image_shape[1] * self.image_shape[2]
        chunk = max(1, self._chunk_elements // (n * per_image))
        log_w = []
        for start in range(0, k, chunk):
            kk = min(chunk, k - start)
            eps = torch.randn(kk, n, self.latent_dim, device=x.device, dtype=mu.dtype)
            z = mu + std * eps
            log_q = standard_normal_log_prob(eps) - 0.5 * logvar.sum(-1)
            out = self._decode(z.flatten(0, 1), None if y is None else y.repeat(kk))
            log_px = self.likelihood.log_prob(out, x.repeat(kk, 1, 1, 1)).view(kk, n)
            log_w.append(log_px + standard_normal_log_prob(z) - log_q)
        return torch.logsumexp(torch.cat(log_w), 0) - math.log(k)

    def sample(self, n: int, y=None, *, z: torch.Tensor | None = None, mean: bool = False,
               temperature: float = 1.0) -> torch.Tensor:
        """z ~ N(0, T^2 I) (or the given ``z``, used as it is), decoded: a draw of p(x | z, y) on
        the level grid, or E[x | z, y] with ``mean=True``. ``temperature`` T scales the prior's
        standard deviation (1 is the model; smaller stays near the prior's mode). Conditional:
        ``y`` picks the classes (default: in turn), or class weights (n, K) mix the one-hots.
        Each image depends only on its own z and y, never on the rest of the batch."""
        y = self.sample_labels(n, y)
        t = check_temperature(temperature)
        with torch.inference_mode():
            if z is None:
                z = torch.randn(n, self.latent_dim, device=self.device)
                if t != 1.0:
                    z = z * t
            z = z.to(self.device)
            images = []
            for i in range(0, n, 1024):
                out = self._decode(z[i : i + 1024], None if y is None else y[i : i + 1024])
                images.append(self.likelihood.mean(out) if mean else self.likelihood.sample(out))
            return torch.cat(images) if images else torch.zeros(0, *self.image_shape, device=self.device)


@register("cvae")
class CVAE(VAE):
    """Conditional VAE: p(x | y, z) q(z | x, y), with y one-hot joined to the encoder's input
    and concatenated to z before decoding. Needs ``num_classes``; same hyper-parameters as
    ``vae``. ``log_prob(x, y)`` is the conditional IWAE bound on log p(x | y)."""

    requires_labels = True
