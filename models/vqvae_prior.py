"""A gated PixelCNN prior over the codes of a trained, frozen VQ-VAE (``vqvae_prior``).

Stage two of the VQ-VAE recipe: the VQ-VAE (``vqvae``) is trained first; this model encodes
each image to its (h, w) grid of codes and fits p(codes [| y]) with a gated PixelCNN whose
inputs are learned embeddings of the codes and whose output is a K-way softmax per position.
Sampling draws a code grid from the prior and decodes it with the VQ-VAE.

The VQ-VAE is passed in built and trained (``vqvae=``; the workbench resolves the preset's
``[model] vqvae_run = "runs/vqvae"`` to the best model of that run). It is frozen: no
gradients, always in eval mode (so its codebook statistics never move), and saved with this
model's checkpoints. Given ``vqvae=None`` a fresh default VQ-VAE is built (for tests).
"""
from __future__ import annotations

import math

import torch

import models
from models import register
from models.base import GenerativeModel
from models.vqvae import VQVAE


@register("vqvae_prior")
class VQVAEPrior(GenerativeModel):
    """p(x) = sum_codes p(codes) p(x | codes), p(codes) a gated PixelCNN over the VQ-VAE grid.

    ``loss`` is the prior's NLL of the codes ("nll_codes", nats per image). ``log_prob`` is
    log p(codes(x)) + log p(x | codes(x)): the ELBO with q(codes | x) a point mass on the
    encoder's codes, so a lower bound on log p(x) in nats per image (for mse/mae VQ-VAEs a
    bound on a log density). Conditional with ``num_classes``: the prior is p(codes | y).

    Hyper-parameters besides ``vqvae`` go to the PixelCNN: ``hidden_channels``,
    ``num_layers``, ``kernel_size``, ``first_kernel_size``, ``head_channels``, ``embed_dim``."""

    exact_likelihood = False

    def __init__(
        self,
        image_shape,
        levels: int = 2,
        num_classes: int | None = None,
        *,
        vqvae: VQVAE | None = None,
        hidden_channels: int = 64,
        num_layers: int = 6,
        kernel_size: int = 3,
        first_kernel_size: int = 7,
        head_channels: int = 128,
        embed_dim: int = 16,
    ):
        super().__init__(image_shape, levels, num_classes)
        if vqvae is None:
            vqvae = VQVAE(self.image_shape, self.levels)
        if not isinstance(vqvae, VQVAE):
            raise ValueError(f"vqvae must be a built VQ-VAE model (models.build('vqvae', ...)), got {type(vqvae).__name__}")
        if vqvae.image_shape != self.image_shape or vqvae.levels != self.levels:
            raise ValueError(
                f"the VQ-VAE was trained on images {vqvae.image_shape} with {vqvae.levels} levels, "
                f"but this prior is for {self.image_shape} with {self.levels} levels"
            )
        self.vqvae = vqvae.requires_grad_(False).eval()
        self.code_shape = vqvae.code_shape
        self.num_codes = vqvae.num_codes
        self.prior = models.build(
            "pixelcnn", (1, *self.code_shape), levels=self.num_codes, num_classes=self.num_classes,
            gated=True, embed_levels=True, hidden_channels=hidden_channels, num_layers=num_layers,
            kernel_size=kernel_size, first_kernel_size=first_kernel_size, head_channels=head_channels,
            embed_dim=embed_dim,
        )

    def train(self, mode: bool = True) -> "VQVAEPrior":
        super().train(mode)
        self.vqvae.eval()  # frozen: its quantiser must never update its statistics
        return self

    # -- codes as the PixelCNN's images ------------------------------------------------------
    def _as_image(self, codes: torch.Tensor) -> torch.Tensor:
        """(n, h, w) codes -> (n, 1, h, w) on the PixelCNN's level grid k / (K - 1)."""
        return codes[:, None].float() / (self.num_codes - 1)

    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vqvae.encode_codes(x)

    def code_log_prob(self, codes: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(codes [| y]) in nats per image."""
        return self.prior.log_prob(self._as_image(codes), y)

    def sample_codes(self, n: int, y=None, temperature: float = 1.0, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Code grids (n, h, w) drawn from the prior; ``temperature`` divides its logits;
        ``noise`` (n, 1, h, w) uniforms make the draw reproducible."""
        y = self.sample_labels(n, y)
        with torch.inference_mode():
            return self.prior.to_levels(self.prior.sample(n, y, noise=noise, temperature=temperature))[:, 0]

    def decode_partial(self, codes: torch.Tensor, done: int, mean: bool = True) -> torch.Tensor:
        """Images of code grids (n, h, w) of which only the first ``done`` positions (raster
        order) are drawn: the codebook vectors there, zero vectors elsewhere, decoded."""
        h, w = self.code_shape
        filled = (torch.arange(h * w, device=codes.device) < done).view(1, 1, h, w)
        with torch.inference_mode():
            z_q = self.vqvae.quantizer.lookup(codes) * filled
            out = self.vqvae.decoder(z_q).float()
            return self.vqvae.likelihood.mean(out) if mean else self.vqvae.likelihood.sample(out)

    def sample_progress(self, n: int, y=None, noise: torch.Tensor | None = None, temperature: float = 1.0,
                        every: int = 1, mean: bool = True, codes: bool = False):
        """Generator of (done, frame) over the h*w code grid, ``done`` codes drawn, from the
        prior's own fast sampler: frames are the decoded images of the partial grid (codes not
        yet drawn read as zero vectors; the last frame is ``sample(..., mean=mean)`` from the
        same noise when ``mean``), or with ``codes=True`` the code grids (n, h, w), -1 where not
        yet drawn."""
        y = self.sample_labels(n, y)
        h, w = self.code_shape
        for done, x in self.prior.sample_progress(n, y, noise=noise, temperature=temperature, every=every):
            grid = self.prior.to_levels(x)[:, 0]
            if codes:
                yield done, torch.where(torch.arange(h * w, device=grid.device).view(h, w) < done, grid, -1)
            else:
                yield done, self.decode_partial(grid, done, mean=mean)

    # -- the contract ------------------------------------------------------------------------
    def loss_capturable(self) -> bool:
        return self.prior.loss_capturable()  # the frozen VQ-VAE's encoder and nearest codes, then the prior

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        y = self.check_labels(y, x.shape[0])
        nll = -self.code_log_prob(self.encode_codes(x), y).mean()
        h, w = self.code_shape
        return {"loss": nll, "nll_codes": nll.detach(), "bits_per_code": nll.detach() / (h * w * math.log(2))}

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(codes(x) [| y]) + log p(x | codes(x)) <= log p(x [| y]), nats per image."""
        y = self.check_labels(y, x.shape[0])
        codes = self.encode_codes(x)
        with torch.no_grad():
            recon = self.vqvae.recon_log_prob(x, codes)
        return self.code_log_prob(codes, y) + recon

    def sample(self, n: int, y=None, *, mean: bool = False, temperature: float = 1.0,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """Codes from the prior, decoded by the VQ-VAE: a draw of p(x | codes) on the level
        grid, or its mean with ``mean=True``. Conditional: ``y`` picks the classes (or class
        weights mix them); ``temperature`` divides the prior's logits."""
        codes = self.sample_codes(n, y, temperature=temperature, noise=noise)
        with torch.inference_mode():
            return self.vqvae.decode_codes(codes, mean=mean)
