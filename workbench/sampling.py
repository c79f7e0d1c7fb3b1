"""What a user does with a trained model besides training it: samples at a temperature or for
a class mixture, reconstructions, latent interpolations, one latent across every class,
generation frame by frame, and the VQ-VAE's code grid. Used by ``genwb sample`` and the app.

    run, model = load("runs/vae-...")
    x, y = test_images(run, 8)
    grid = reconstruct(model, x, y)                       # 8 originals, then their reconstructions
    check(model, "samples", mix={3: 0.5, 7: 0.5})         # UserError on a bad combination
    images = draw(model, 64, label=soft_label(10, {3: 0.5, 7: 0.5}), temperature=0.8, seed=1)

Every operation returns CPU float tensors in [0, 1] (the model's level grid for draws; means
such as E[x | z] are in [0, 1] too), draws in batches of ``BATCH`` so any number that fits in
memory on the CPU works, and is reproducible from ``seed``: the autoregressive models (and the
VQ-VAE prior) draw from uniforms made by a CPU generator seeded with it, so a draw is the same
on every device and in any batch size, and the last progress frame is the draw from the same
seed. No Textual and no click here.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

import models
from models.base import AutoregressiveModel
from models.cudagraph import device_lock
from models.layers import check_temperature
from workbench.devices import forked_rng
from workbench.errors import UserError

BATCH = 256            # images per model call
MAX_IMAGES = 100_000   # the most images one call returns
MAX_PROGRESS = 256     # progress runs one batch: its frames all live in memory

LATENT = {"vae", "cvae", "vqvae", "vqvae_prior"}
GAUSSIAN_LATENT = {"vae", "cvae"}


def _operations() -> dict[str, set[str]]:
    every = set(models.names())
    ar = {n for n in every if issubclass(models.get(n), AutoregressiveModel)}
    return {
        "samples": every,
        "recon": set(LATENT),
        "interpolate": set(LATENT),
        "classes": GAUSSIAN_LATENT | {"vqvae_prior"} | ar,
        "progress": ar | {"vqvae_prior"},
        "codes": {"vqvae", "vqvae_prior"},
    }


#: Which model names (``models.names()``) support which operation (``genwb sample --mode``).
OPERATIONS: dict[str, set[str]] = _operations()
#: Models whose decoder has a mean E[x | z] that ``draw(..., mean=True)`` shows instead of a draw.
MEAN = set(LATENT)


def default_mean(model) -> bool:
    """Whether a viewer should show ``model``'s decoder mean rather than draws by default: yes for
    a binarised VAE or CVAE (its Bernoulli draws look like noise; papers show the mean), else no."""
    return model.registered_name in GAUSSIAN_LATENT and getattr(model, "levels", None) == 2
#: Models whose samples take a temperature: every autoregressive model, the VAEs and the prior.
TEMPERATURE = OPERATIONS["progress"] | GAUSSIAN_LATENT
_WHY = {
    "recon": "a model with an encoder",
    "interpolate": "a model with an encoder (interpolation walks between encoded images)",
    "classes": "a model whose samples can share their randomness across classes",
    "progress": "an autoregressive model (or the VQ-VAE prior, code by code)",
    "codes": "a VQ-VAE (or its prior)",
}


# -- runs and data ------------------------------------------------------------------------------
def load(run_dir, which: str = "best", device: str = "auto"):
    """(Run, model in eval mode) from a run folder's checkpoint ``which`` ("best", or "last",
    which a running job writes too); the other one if that one is missing."""
    from workbench.devices import resolve_device
    from workbench.runs import open_run

    if which not in ("best", "last"):
        raise UserError(f"checkpoint must be 'best' or 'last', got {which!r}")
    run = open_run(run_dir)
    dev = resolve_device(device)
    paths = {w: run.checkpoint_path(w) for w in ("best", "last")}
    if not any(p.exists() for p in paths.values()):
        raise UserError(run.no_checkpoint(
            f"{run.path}: no checkpoint yet (state: {run.status().get('state', 'unknown')}); "
            f"wait for the first one, or train it: genwb run --resume {run.path}"))
    if not paths[which].exists():
        which = "last" if which == "best" else "best"
    return run, run.load_model(which, dev)


@functools.lru_cache(maxsize=2)
def _test_split(dataset: str, root: str | None, binarize: str, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    from workbench.data import load_test_split

    return load_test_split(dataset, binarize, levels, root)


def test_images(run, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (x, y) drawn at random (by ``seed``) from the run's test split, in the model's
    domain exactly as the trainer's test NLL and ``genwb eval`` see it."""
    data = run.config.data
    x, y = _test_split(data.dataset, data.root or None, data.binarize, data.levels)
    if not 1 <= n <= len(x):
        raise UserError(f"-n {n}: the {data.dataset} test split has {len(x)} images; ask for 1 to {len(x)}")
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[pick].clone(), y[pick].clone()


# -- labels -------------------------------------------------------------------------------------
def parse_mix(text: str) -> dict[int, float]:
    """"3:0.5,7:0.5" -> {3: 0.5, 7: 0.5}; a class without a weight ("3,7") weighs 1."""
    mix: dict[int, float] = {}
    for part in str(text).split(","):
        cls, colon, weight = part.strip().partition(":")
        try:
            k, w = int(cls), float(weight) if colon else 1.0
        except ValueError:
            raise UserError(f"--mix {text!r}: write class:weight pairs separated by commas, e.g. 3:0.5,7:0.5") from None
        if k in mix:
            raise UserError(f"--mix {text!r}: class {k} appears twice")
        if not (math.isfinite(w) and w >= 0):
            raise UserError(f"--mix {text!r}: weights must be non-negative numbers, got {weight.strip()}")
        mix[k] = w
    if not any(mix.values()):
        raise UserError(f"--mix {text!r}: the weights sum to 0; give at least one positive weight")
    return mix


def soft_label(num_classes: int, mix: dict[int, float]) -> torch.Tensor:
    """Class weights (K,) from {class: weight}, normalised to sum to 1."""
    bad = [k for k in mix if not 0 <= k < num_classes]
    if bad:
        raise UserError(f"--mix: class {bad[0]} is out of range; classes are 0 to {num_classes - 1}")
    total = sum(mix.values())
    if not total > 0:
        raise UserError("--mix: the weights sum to 0; give at least one positive weight")
    weights = torch.zeros(num_classes)
    for k, w in mix.items():
        weights[k] = w / total
    return weights


def _batch_labels(model, label, start: int, size: int):
    """Labels of images start..start+size: None (unconditional), classes in turn counted from
    ``start`` (so that batches continue the turn), or ``label`` as given: one class or class
    weights (K,) for all, which the model's ``sample_labels`` spreads over the batch."""
    if model.num_classes is None:
        return None
    if label is None:
        return (torch.arange(start, start + size) % model.num_classes).to(model.device)
    return label


# -- checks -------------------------------------------------------------------------------------
def check(model, op: str, *, label=None, mix=None, temperature: float = 1.0, mean: bool = False) -> None:
    """UserError (one line, exit code 2) for an operation the model cannot do, or arguments
    that do not go with it."""
    name = model.registered_name
    if op not in OPERATIONS:
        raise UserError(f"unknown mode {op!r}; allowed: {', '.join(OPERATIONS)}")
    if name not in OPERATIONS[op]:
        which = ", ".join(sorted(OPERATIONS[op]))
        raise UserError(f"--mode {op} needs {_WHY[op]} ({which}); this run's model is {name}")
    try:
        t = check_temperature(temperature)
    except (TypeError, ValueError):
        raise UserError(f"--temperature must be a positive number (1 is exact, towards 0 greedy), got {temperature}") from None
    if t != 1.0:
        if op in ("recon", "interpolate"):
            raise UserError(f"--temperature applies to drawn samples (samples, classes, progress), not to --mode {op}")
        if name not in TEMPERATURE:
            raise UserError(f"--temperature: {name} has no temperature (its codes are uniform); use its prior, vqvae_prior")
    if mean and name not in LATENT:
        raise UserError(f"--mean is the decoder's mean of a latent model ({', '.join(sorted(LATENT))}); {name} has none")
    if mean and op in ("recon", "progress"):
        raise UserError(f"--mode {op} always shows the decoder's mean; leave out --mean")
    if label is not None and mix is not None:
        raise UserError("give --label or --mix, not both")
    if label is None and mix is None:
        if op == "classes" and model.num_classes is None:
            raise UserError(f"--mode classes needs a class-conditional run; this {name} run is unconditional")
        return
    flag = "--label" if label is not None else "--mix"
    if model.num_classes is None:
        raise UserError(f"{flag} given, but this {name} run is not class-conditional")
    if op in ("recon", "interpolate", "classes"):
        raise UserError(f"{flag} applies to samples, progress and codes; --mode {op} uses "
                        + ("every class" if op == "classes" else "the test images' own labels"))
    if isinstance(label, torch.Tensor) and label.is_floating_point():
        if label.shape != (model.num_classes,):
            raise UserError(f"{flag}: class weights must have shape ({model.num_classes},)")
    elif label is not None and not 0 <= int(label) < model.num_classes:
        raise UserError(f"--label {label} is out of range; classes are 0 to {model.num_classes - 1}")
    if mix is not None:
        soft_label(model.num_classes, mix)


def _check_count(n: int, what: str = "-n") -> None:
    if not isinstance(n, int) or n < 1:
        raise UserError(f"{what} must be a positive whole number, got {n}")
    if n > MAX_IMAGES:
        raise UserError(f"{what} {n} is too many for one call; at most {MAX_IMAGES:,} (run it several times with --seed)")


# -- randomness -----------------------------------------------------------------------------------
def _noise(model, size: int, gen: torch.Generator) -> torch.Tensor | None:
    """The uniforms an autoregressive sampler draws from, from a CPU generator (the same on
    every device); None for models that draw otherwise."""
    if isinstance(model, AutoregressiveModel):
        shape = model.image_shape
    elif model.registered_name == "vqvae_prior":
        shape = (1, *model.code_shape)
    else:
        return None
    return torch.rand((size, *shape), generator=gen).to(model.device)


def _vqvae(model):
    return model.vqvae if model.registered_name == "vqvae_prior" else model if model.registered_name == "vqvae" else None


# -- operations -------------------------------------------------------------------------------------
def draw(model, n: int, *, label=None, temperature: float = 1.0, mean: bool = False, seed: int = 0,
         batch_size: int = BATCH) -> torch.Tensor:
    """n samples (n, C, H, W). ``label``: None (classes in turn for a conditional model), a class,
    or class weights (K,) (see ``soft_label``); ``temperature`` divides an autoregressive
    model's logits and scales a VAE's prior standard deviation; ``mean`` gives the decoder's
    mean E[x | z] of a latent model instead of a draw."""
    _check_count(n)
    kwargs = {}
    if temperature != 1.0:
        kwargs["temperature"] = float(temperature)
    if mean:
        kwargs["mean"] = True
    gen = torch.Generator().manual_seed(seed)
    chunks = []
    with forked_rng(seed, model.device), torch.inference_mode():
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            noise = _noise(model, size, gen)
            extra = {} if noise is None else {"noise": noise}
            y = _batch_labels(model, label, start, size)
            chunks.append(model.sample(size, y=y, **kwargs, **extra).float().cpu())
    return torch.cat(chunks)


def reconstruct(model, x: torch.Tensor, y: torch.Tensor | None = None, *, mean: bool = True,
                batch_size: int = BATCH) -> torch.Tensor:
    """(2n, C, H, W): the n images x, then their reconstructions: E[x | z = mu(x)] for the VAEs,
    the decoded nearest codes for the VQ-VAE (and the prior, through its VQ-VAE); a draw of
    p(x | z) instead of the mean with ``mean=False``."""
    vq = _vqvae(model)
    if vq is None and model.num_classes is not None and y is None:
        raise UserError(f"{model.registered_name} is class-conditional: reconstruct needs the images' labels y")
    recons = []
    with device_lock(model.device), torch.inference_mode():  # a draw of p(x | z) with mean=False
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(model.device)
            if vq is not None:
                recons.append(vq.decode_codes(vq.encode_codes(xb), mean=mean).float().cpu())
                continue
            yb = None if y is None else y[start:start + batch_size].to(model.device)
            mu, _ = model.encode(xb, yb)
            recons.append(model.decode(mu, yb, mean=mean).float().cpu())
    return torch.cat([x.float().cpu(), *recons])


def _path(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, slerp: bool) -> torch.Tensor:
    """Points along the way from rows of a to rows of b (p, ...) at fractions t: (p, steps, ...).
    The ends are a and b exactly. ``slerp``: the great circle, sin((1-t)W) a + sin(tW) b over
    sin W; between (nearly) parallel rows the straight line (its limit); between opposite rows,
    whose great circle is not unique, the half circle through a direction orthogonal to a (the
    axis a leans on least), with the norm going linearly from |a| to |b|: never through the origin."""
    shape = (a.shape[0], 1, *a.shape[1:])
    a, b = a.reshape(shape), b.reshape(shape)
    t = t.to(a).view(1, -1, *[1] * (a.dim() - 2))
    line = (1 - t) * a + t * b
    if slerp:
        flat_a, flat_b = a.flatten(2), b.flatten(2)
        row = (a.shape[0], 1, *[1] * (a.dim() - 2))
        cos = F.cosine_similarity(flat_a, flat_b, dim=-1).clamp(-1, 1).view(row)
        omega = torch.acos(cos)
        sin = torch.sin(omega)
        safe = sin.abs() > 1e-6
        sin = torch.where(safe, sin, torch.ones_like(sin))
        curved = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin
        points = torch.where(safe, curved, line)
        opposite = ~safe & (cos < 0)
        if opposite.any() and flat_a.shape[-1] > 1:
            norm_a, norm_b = flat_a.norm(dim=-1).view(row), flat_b.norm(dim=-1).view(row)
            unit = a / norm_a.clamp(min=1e-30)
            flat_unit = unit.flatten(2)
            axis = F.one_hot(flat_unit.abs().argmin(-1), flat_unit.shape[-1]).to(a)  # (p, 1, N)
            ortho = axis - (axis * flat_unit).sum(-1, keepdim=True) * flat_unit
            ortho = (ortho / ortho.norm(dim=-1, keepdim=True)).view_as(a)
            turn = math.pi * t
            circle = ((1 - t) * norm_a + t * norm_b) * (torch.cos(turn) * unit + torch.sin(turn) * ortho)
            points = torch.where(opposite, circle, points)
    else:
        points = line
    points = points.clone()
    points[:, 0], points[:, -1] = a[:, 0], b[:, 0]
    return points


def interpolate(model, xa: torch.Tensor, xb: torch.Tensor, steps: int, *, y=None, slerp: bool = False,
                batch_size: int = BATCH) -> torch.Tensor:
    """(pairs * steps, C, H, W), a row of ``steps`` images per pair (xa[i] -> xb[i]) whose ends
    are the two images' reconstructions. VAE/CVAE: the posterior means, joined by a line or
    (``slerp``) a great circle. VQ-VAE (and the prior's): z_e before quantisation, joined by a
    line; every point is quantised, then decoded. CVAE: ``y`` is the pairs' labels (pairs,), or
    a tuple (ya, yb) of both ends' labels; where they differ the label walks too, as class weights."""
    if steps < 2:
        raise UserError(f"--steps must be at least 2 (the two ends), got {steps}")
    if len(xa) != len(xb):
        raise UserError("interpolate needs as many start images as end images")
    _check_count(len(xa) * steps, "pairs x --steps")
    t = torch.linspace(0, 1, steps)
    vq = _vqvae(model)
    if vq is not None and slerp:
        raise UserError("--slerp is for the Gaussian latents of vae and cvae; the VQ-VAE's z_e is interpolated linearly")
    ya, yb = (y if isinstance(y, tuple) else (y, y))
    if vq is None and model.num_classes is not None and ya is None:
        raise UserError(f"{model.registered_name} is class-conditional: interpolate needs the images' labels y")
    rows = []
    pairs = max(1, batch_size // steps)
    with torch.inference_mode():
        for s in range(0, len(xa), pairs):
            a, b = xa[s:s + pairs].to(model.device), xb[s:s + pairs].to(model.device)
            if vq is not None:
                z = _path(vq.encode(a), vq.encode(b), t, False).flatten(0, 1)
                rows.append(vq.decode_latent(z, mean=True).float().cpu())
                continue
            la = None if ya is None else ya[s:s + pairs].to(model.device)
            lb = None if yb is None else yb[s:s + pairs].to(model.device)
            z = _path(model.encode(a, la)[0], model.encode(b, lb)[0], t, slerp).flatten(0, 1)
            if la is None:
                labels = None
            elif torch.equal(la, lb):
                labels = la.repeat_interleave(steps)
            else:  # the label walks with z: class weights (1 - t) onehot(ya) + t onehot(yb)
                k = model.num_classes
                wa, wb = F.one_hot(la, k).float(), F.one_hot(lb, k).float()
                tt = t.to(model.device).view(1, -1, 1)
                labels = ((1 - tt) * wa[:, None] + tt * wb[:, None]).flatten(0, 1)
                labels[::steps], labels[steps - 1::steps] = wa, wb
            rows.append(model.decode(z, labels, mean=True).float().cpu())
    return torch.cat(rows)


def class_sweep(model, n: int, *, seed: int = 0, temperature: float = 1.0, mean: bool = False,
                batch_size: int = BATCH) -> torch.Tensor:
    """(n * K, C, H, W): n rows, each one latent z (VAE, drawn at ``temperature`` times the
    prior's standard deviation) or one set of sampling uniforms (autoregressive models, the
    prior; for MADE with several mask sets also one mask set) decoded or drawn for every class
    0..K-1, so that the classes of a row differ only by their label."""
    k = model.num_classes
    if k is None:
        raise UserError(f"--mode classes needs a class-conditional run; this {model.registered_name} run is unconditional")
    _check_count(n * k, "-n x classes")
    gen = torch.Generator().manual_seed(seed)
    kwargs = {"mean": True} if mean else {}
    rows_per_call = max(1, batch_size // k)
    chunks = []
    with forked_rng(seed, model.device), torch.inference_mode():
        for start in range(0, n, rows_per_call):
            rows = min(rows_per_call, n - start)
            y = torch.arange(k, device=model.device).repeat(rows)
            if model.registered_name in GAUSSIAN_LATENT:
                z = torch.randn(rows, model.latent_dim, generator=gen) * float(temperature)
                out = model.sample(rows * k, y=y, z=z.repeat_interleave(k, 0).to(model.device), **kwargs)
            else:
                noise = _noise(model, rows, gen).repeat_interleave(k, 0)
                if getattr(model, "num_masks", 1) > 1:  # MADE: one mask set (order) per row, shared by its classes
                    kwargs["masks"] = torch.randint(model.num_masks, (rows,), generator=gen).repeat_interleave(k, 0)
                out = model.sample(rows * k, y=y, noise=noise, temperature=float(temperature), **kwargs)
            chunks.append(out.float().cpu())
    return torch.cat(chunks)


def progress(model, n: int, *, every: int, label=None, temperature: float = 1.0, seed: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
    """(done, images) frames of n images as they are generated: after every ``every`` subpixels
    in generation order (every ``every`` codes of the VQ-VAE prior, decoded) and at the end,
    from the model's own fast sampler. For an autoregressive model the last frame is
    ``draw(model, n, ..., seed=seed)`` (for n <= ``BATCH``). For ``vqvae_prior`` the frames show
    the decoder's mean of the codes drawn so far, so the last frame is
    ``draw(model, n, ..., mean=True, seed=seed)``; a plain draw samples p(x | codes) on top."""
    if not 1 <= n <= MAX_PROGRESS:
        raise UserError(f"-n {n}: progress keeps every frame in memory; ask for 1 to {MAX_PROGRESS} images")
    if not isinstance(every, int) or every < 1:
        raise UserError(f"--every must be a positive whole number of subpixels, got {every}")
    if not hasattr(model, "sample_progress"):
        raise UserError(f"--mode progress: {model.registered_name} does not generate step by step")
    gen = torch.Generator().manual_seed(seed)
    noise = _noise(model, n, gen)
    y = _batch_labels(model, label, 0, n)
    with forked_rng(seed, model.device):  # MADE draws each image's mask set from the global RNG, as in draw()
        for done, x in model.sample_progress(n, y=y, noise=noise, temperature=float(temperature), every=every):
            yield done, x.float().cpu()


# -- the VQ-VAE's codes ---------------------------------------------------------------------------------
def palette(k: int) -> torch.Tensor:
    """(k, 3) RGB colours in [0, 1], neighbouring indices far apart (golden-ratio hues, two
    saturations and three brightnesses in turn)."""
    i = torch.arange(k, dtype=torch.float64)
    h = (i * 0.6180339887498949) % 1.0
    s = torch.where(i % 2 == 0, 0.85, 0.55)
    v = torch.tensor([1.0, 0.8, 0.6], dtype=torch.float64)[(torch.arange(k) % 3)]
    sector = (h * 6).floor()
    f = h * 6 - sector
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = torch.zeros(k, 3, dtype=torch.float64)
    for j, (r, g, b) in enumerate(table):
        m = sector.long() % 6 == j
        rgb[m] = torch.stack([r, g, b], 1)[m]
    return rgb.float()


def colour_codes(codes: torch.Tensor, num_codes: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(n, h, w) code indices -> (n, 3, H, W) colours (``palette``), scaled to ``size`` by
    nearest neighbour; indices < 0 (not drawn yet) are black."""
    colours = torch.cat([palette(num_codes), torch.zeros(1, 3)])
    idx = codes.long().cpu().clone()
    idx[idx < 0] = num_codes
    out = colours[idx].permute(0, 3, 1, 2)
    return F.interpolate(out, size=size, mode="nearest") if size else out


def usage_picture(usage: torch.Tensor, height: int = 48, bar: int = 2) -> torch.Tensor:
    """The codebook usage histogram as an image (3, height, K * bar): one bar per code in its
    colour, heights proportional to the counts (unused codes show as a dark gap)."""
    k = len(usage)
    frac = usage.float() / usage.max().clamp(min=1)
    rows = torch.arange(height, 0, -1).float().view(height, 1) / height  # 1 at the top
    filled = (rows <= frac.view(1, k)) & (frac.view(1, k) > 0)
    img = torch.where(filled[None], palette(k).t()[:, None, :], torch.full((3, 1, 1), 0.15))
    return img.repeat_interleave(bar, dim=2)


@dataclass
class CodeGrid:
    codes: torch.Tensor    # (n, h, w) code indices
    images: torch.Tensor   # (n, C, H, W) the decoded codes (E[x | codes])
    usage: torch.Tensor    # (K,) how often each code appears (over ``usage_x`` if given)
    picture: torch.Tensor  # (2n, 3, H, W): per image its coloured code grid, then the decoded image

    @property
    def perplexity(self) -> float:
        from models.vqvae import perplexity

        return float(perplexity(self.codes, len(self.usage), counts=self.usage.double()))

    @property
    def used(self) -> int:
        return int((self.usage > 0).sum())


def code_grid(model, x: torch.Tensor | None = None, n: int = 16, seed: int = 0, *, label=None,
              temperature: float = 1.0, usage_x: torch.Tensor | None = None, batch_size: int = BATCH) -> CodeGrid:
    """The codes of images ``x`` (or, without x, of n draws from the prior of a vqvae_prior,
    or n uniform code grids of a bare VQ-VAE), their decoded images, the codebook usage over
    those codes (or over the codes of ``usage_x``), and the picture of codes beside images."""
    vq = _vqvae(model)
    if vq is None:
        raise UserError(f"--mode codes needs a VQ-VAE (vqvae, vqvae_prior); this run's model is {model.registered_name}")

    def encode(images):
        with torch.inference_mode():
            return torch.cat([vq.encode_codes(images[s:s + batch_size].to(model.device)).cpu()
                              for s in range(0, len(images), batch_size)])

    if x is not None:
        codes = encode(x)
    else:
        _check_count(n)
        gen = torch.Generator().manual_seed(seed)
        if model.registered_name == "vqvae_prior":
            chunks = []
            for s in range(0, n, batch_size):
                size = min(batch_size, n - s)
                chunks.append(model.sample_codes(size, _batch_labels(model, label, s, size), temperature=float(temperature),
                                                 noise=_noise(model, size, gen)).cpu())
            codes = torch.cat(chunks)
        else:
            codes = torch.randint(vq.num_codes, (n, *vq.code_shape), generator=gen)
    with torch.inference_mode():
        images = torch.cat([vq.decode_codes(codes[s:s + batch_size].to(model.device), mean=True).float().cpu()
                            for s in range(0, len(codes), batch_size)])
    counted = codes if usage_x is None else encode(usage_x)
    usage = torch.bincount(counted.flatten(), minlength=vq.num_codes)
    coloured = colour_codes(codes, vq.num_codes, images.shape[-2:])
    shown = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    picture = torch.stack([coloured, shown], 1).flatten(0, 1)
    return CodeGrid(codes, images, usage, picture)


# -- files: what ``genwb sample`` writes ------------------------------------------------------------
DEFAULT_N = {"samples": 64, "recon": 32, "interpolate": 8, "classes": 8, "progress": 8, "codes": 16}
STRIP_FRAMES, GIF_FRAMES = 16, 120


def _paired_rows(x: torch.Tensor, r: torch.Tensor, cols: int) -> torch.Tensor:
    """Originals and reconstructions laid out as a row of ``cols`` originals above the row of
    their reconstructions, and so on (a short last row padded with blanks)."""
    blank = torch.full((1, *x.shape[1:]), 0.5)
    rows = []
    for s in range(0, len(x), cols):
        pad = blank.expand(cols - len(x[s:s + cols]), *x.shape[1:])
        rows += [x[s:s + cols], pad, r[s:s + cols], pad]
    return torch.cat(rows)


def write(run, model, mode: str, *, n: int | None = None, label: int | None = None, mix: dict[int, float] | None = None,
          temperature: float = 1.0, mean: bool = False, steps: int | None = None, slerp: bool = False,
          every: int | None = None, seed: int = 0, out=None, scale: int = 1) -> tuple[list, str]:
    """Run one ``genwb sample`` mode and write its pictures: returns the paths written and a
    one-line note (or ""). ``out`` is the PNG (default RUN_DIR/samples/<mode>-<time>.png);
    progress also writes the GIF beside it, codes the usage histogram (<out>-usage.png)."""
    import datetime as dt
    from pathlib import Path

    from workbench.images import pick_frames, save_gif, save_grid, save_strip

    check(model, mode, label=label, mix=mix, temperature=temperature, mean=mean)
    if steps is not None and mode != "interpolate":
        raise UserError("--steps is the number of images per row of --mode interpolate")
    if slerp and mode != "interpolate":
        raise UserError("--slerp applies to --mode interpolate")
    if every is not None and mode != "progress":
        raise UserError("--every is the number of subpixels between frames of --mode progress")
    if not isinstance(scale, int) or not 1 <= scale <= 16:
        raise UserError(f"--scale must be a whole number from 1 to 16, got {scale}")
    n = DEFAULT_N[mode] if n is None else n
    _check_count(n)
    y = soft_label(model.num_classes, mix) if mix is not None else label
    path = Path(out) if out else run.path / "samples" / f"{mode}-{dt.datetime.now():%Y%m%d-%H%M%S}.png"
    if path.suffix.lower() != ".png":
        raise UserError(f"--out {path}: give a .png file name")
    note = ""
    if mode == "samples":
        images = draw(model, n, label=y, temperature=temperature, mean=mean, seed=seed)
        return [save_grid(images, path, scale=scale)], note
    if mode == "recon":
        x, labels = test_images(run, n, seed)
        both = reconstruct(model, x, labels if model.num_classes is not None else None, mean=True)
        cols = min(n, 8)
        return [save_grid(_paired_rows(both[:n], both[n:], cols), path, nrow=cols, scale=scale)], note
    if mode == "interpolate":
        steps = 9 if steps is None else steps
        available = len(_test_split_of(run))
        if 2 * n > available:
            raise UserError(f"-n {n}: each pair takes two of the {available} test images; ask for at most {available // 2} pairs")
        x, labels = test_images(run, 2 * n, seed)
        ys = None if model.num_classes is None else (labels[:n], labels[n:])
        rows = interpolate(model, x[:n], x[n:], steps, y=ys, slerp=slerp)
        return [save_grid(rows, path, nrow=steps, scale=scale)], note
    if mode == "classes":
        images = class_sweep(model, n, seed=seed, temperature=temperature, mean=mean)
        return [save_grid(images, path, nrow=model.num_classes, scale=scale)], note
    if mode == "progress":
        total = model.code_shape[0] * model.code_shape[1] if model.registered_name == "vqvae_prior" else model.num_dims
        every = max(1, math.ceil(total / 24)) if every is None else every
        frames = [x for _, x in progress(model, n, every=every, label=y, temperature=temperature, seed=seed)]
        strip = save_strip(pick_frames(frames, STRIP_FRAMES), path, scale=scale)
        gif = save_gif(pick_frames(frames, GIF_FRAMES), path.with_suffix(".gif"), scale=max(scale, 2))
        return [strip, gif], f"{len(frames)} frames, one every {every} of {total} {'codes' if total != model.num_dims else 'subpixels'}"
    grid, note = codes_view(run, model, n, seed=seed, label=y, temperature=temperature)
    picture = save_grid(grid.picture, path, nrow=2 * min(n, 4), scale=scale)
    usage = save_grid(usage_picture(grid.usage)[None], path.with_name(f"{path.stem}-usage.png"), scale=scale)
    return [picture, usage], note


USAGE_IMAGES = 1000  # test images whose codes a bare VQ-VAE's usage statistics count


def codes_view(run, model, n: int, *, seed: int = 0, label=None, temperature: float = 1.0) -> tuple[CodeGrid, str]:
    """The code grid and its one-line statistics, as ``genwb sample --mode codes`` and the app's
    ``v`` show them. A bare VQ-VAE: the codes of n test images through the encoder, with usage
    and perplexity over the codes of ``USAGE_IMAGES`` other test images (seed + 1), which is what
    shows a collapsed codebook. A prior: n code grids it draws, and usage over those."""
    if model.registered_name == "vqvae":
        x, _ = test_images(run, n, seed)
        many = min(USAGE_IMAGES, len(_test_split_of(run)))
        grid = code_grid(model, x, usage_x=test_images(run, many, seed + 1)[0])
        what, counted = f"{n} test images", f"{many} test images"
    else:
        grid = code_grid(model, n=n, seed=seed, label=label, temperature=temperature)
        what = counted = f"{n} prior samples"
    return grid, (f"codes of {what}; usage over {counted}: {grid.used} of {grid.usage.numel()} codes "
                  f"used, perplexity {grid.perplexity:.1f}")


def _test_split_of(run) -> torch.Tensor:
    data = run.config.data
    return _test_split(data.dataset, data.root or None, data.binarize, data.levels)[0]
