"""Typed events the Trainer emits; the headless runner, the job queue and the TUI consume them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Started:
    run_dir: Path
    step: int          # the step training starts after (0, or the resumed checkpoint's)
    total_steps: int
    num_params: int
    device: str
    step_mode: str = "eager"  # how the step runs: "eager", or e.g. "CUDA graph", "compile default, bf16"


@dataclass(frozen=True)
class Step:
    step: int
    total_steps: int
    epoch: int
    metrics: dict[str, float]  # loss and its parts, averaged over the last log interval
    lr: float
    images_per_s: float


@dataclass(frozen=True)
class Evaluated:
    step: int
    split: str                 # "val" or "test"
    metrics: dict[str, float]  # nll (nats per image), bpd, ...
    best: bool = False


@dataclass(frozen=True)
class Samples:
    step: int
    path: Path
    images: Any = field(repr=False)  # a CPU tensor (n, C, H, W) in [0, 1]
    kind: str = "samples"      # or "recon": latent models' validation images above their reconstructions


@dataclass(frozen=True)
class Checkpointed:
    step: int
    path: Path


@dataclass(frozen=True)
class Finished:
    step: int
    reason: str                # "completed", "early-stopped" or "cancelled"


@dataclass(frozen=True)
class Warned:
    step: int
    message: str               # one line: something the run works around (e.g. torch.compile failed)


@dataclass(frozen=True)
class Failed:
    step: int
    message: str
