"""Image grids written as PNG files (atomically)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """(n, C, H, W) in [0, 1] -> one uint8 (rows, cols[, 3]) array with ``pad`` pixels between images."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    out = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad) * 0.5
    for i in range(n):
        r, q = divmod(i, nrow)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    arr = (out * 255).round().byte().numpy()
    return arr[0] if c == 1 else arr.transpose(1, 2, 0)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = _pil(images, nrow, scale)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def _pil(images: torch.Tensor, nrow: int | None, scale: int) -> Image.Image:
    """The grid of ``images`` as a PIL image, scaled by nearest neighbour."""
    img = Image.fromarray(grid(images, nrow))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def pick_frames(frames: list, most: int) -> list:
    """At most ``most`` of ``frames``, evenly spaced, always keeping the first and the last."""
    if len(frames) <= most:
        return list(frames)
    idx = sorted({round(i * (len(frames) - 1) / (most - 1)) for i in range(most)})
    return [frames[i] for i in idx]


def save_strip(frames: list[torch.Tensor], path: str | Path, scale: int = 1) -> Path:
    """Frames of the same n images, each (n, C, H, W), as one PNG: a row per image, a column
    per frame (left to right in time)."""
    stacked = torch.stack([f.float().cpu() for f in frames], 1)  # (n, F, C, H, W)
    return save_grid(stacked.flatten(0, 1), path, nrow=len(frames), scale=scale)


def save_gif(frames: list[torch.Tensor], path: str | Path, nrow: int | None = None, scale: int = 1,
             frame_ms: int = 80, hold_ms: int = 1500) -> Path:
    """Frames (each (n, C, H, W)) as an animated GIF of image grids, looping, the last frame held
    for ``hold_ms``; scaled by nearest neighbour."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = [_pil(f, nrow, scale) for f in frames]
    if pictures[0].mode != "L":
        pictures = [p.convert("P", palette=Image.ADAPTIVE) for p in pictures]
    durations = [frame_ms] * (len(pictures) - 1) + [hold_ms]
    tmp = path.with_name(f".{path.name}.tmp")
    pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    os.replace(tmp, path)
    return path
