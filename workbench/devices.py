"""Turn a device setting ("auto", "cpu", "cuda", "cuda:N") into a torch.device, or say why not."""
from __future__ import annotations

import torch

from workbench.errors import UserError


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
