"""Turn a device setting ("auto", "cpu", "cuda", "cuda:N") into a torch.device, or say why not;
and seeded random streams on a device that leave the global one as it was."""
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


class PrivateStream:
    """A seeded random stream of its own for code that draws only from the global generator
    (``model.sample``, the IWAE bound): each ``with stream.draws():`` swaps the stream's state in
    under the device's lock and the global state back out, so training beside it in another thread
    keeps its noise, and the evaluation's draws depend on ``seed`` alone. Never reseeds globally."""

    def __init__(self, seed: int, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        gen = torch.Generator().manual_seed(seed)
        self.cpu_state = gen.get_state()
        self.cuda_state = None
        if self.cuda:
            cuda_gen = torch.Generator(device=self.device).manual_seed(seed)
            self.cuda_state = cuda_gen.get_state()

    @contextlib.contextmanager
    def draws(self):
        with device_lock(self.device):
            outer_cpu = torch.get_rng_state()
            outer_cuda = torch.cuda.get_rng_state(self.device) if self.cuda else None
            torch.set_rng_state(self.cpu_state)
            if self.cuda:
                torch.cuda.set_rng_state(self.cuda_state, self.device)
            try:
                yield
            finally:
                self.cpu_state = torch.get_rng_state()
                torch.set_rng_state(outer_cpu)
                if self.cuda:
                    self.cuda_state = torch.cuda.get_rng_state(self.device)
                    torch.cuda.set_rng_state(outer_cuda, self.device)


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
