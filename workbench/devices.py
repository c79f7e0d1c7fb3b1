"""Turn a device setting ("auto", "cpu", "cuda", "cuda:N") into a torch.device, or say why not;
and a seeded random stream on a device that leaves the global one as it was."""
from __future__ import annotations

import contextlib

import torch

from models.cudagraph import device_lock
from workbench.errors import UserError


@contextlib.contextmanager
def forked_rng(seed: int, device: torch.device):
    """The global RNG (the CPU's and ``device``'s) seeded with ``seed`` for the block and restored
    after it: validation and sampling draw without moving training's stream. Holds the device's
    lock (see models.cudagraph.device_lock)."""
    with device_lock(device), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def resolve_device(spec: str) -> torch.device:
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r} asked for, but this machine has no usable CUDA GPU; use --device cpu or device = \"auto\"")
        index = spec.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise UserError(f"device {spec!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return torch.device(spec)
    raise UserError(f"unknown device {spec!r}; allowed: auto, cpu, cuda, cuda:N")
