"""Data-parallel training over several processes (``torchrun``, or ``genwb run --nproc N``).

A process is a rank of a data-parallel run when torchrun's environment says so (``WORLD_SIZE``
above 1, with ``RANK`` and ``LOCAL_RANK``); otherwise nothing here is used and
``torch.distributed`` is never initialised. ``setup`` joins the process group: NCCL on GPUs
(each rank on ``cuda:LOCAL_RANK``), gloo on a CPU, plus a gloo group for small control messages
(the stop flag, the run folder's path) that never waits for the GPU. Every collective gives up
after ``GENWB_DDP_TIMEOUT`` seconds (default 300): a rank that hangs or dies fails the others
instead of leaving them waiting for ever (torchrun's agent also stops the others at once when
a rank exits).

How a run is split: every rank computes the same global batch for (seed, step) and trains on
its contiguous share of ``batch_size / world`` rows; DistributedDataParallel averages the
gradients, so with equal shares the update is the single-process one over the global batch.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.errors import UserError

if TYPE_CHECKING:  # torch itself loads in the ranks only, not in the --nproc launcher
    import torch

DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> World | None:
    """This process's place in a torchrun launch, or None for a plain single-process run."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (they are set by torchrun)") from None
    if size <= 1:
        return None
    return World(rank, local_rank, size)


def timeout_s() -> float:
    text = os.environ.get("GENWB_DDP_TIMEOUT", "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UserError(f"GENWB_DDP_TIMEOUT={text!r}: give the seconds a rank waits for the others, e.g. 300")
    return value


def check_batch(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise UserError(f"[data] batch_size = {batch_size} cannot be split over {world} processes; "
                        f"use a multiple of {world} (it is the global batch)")


_control = None  # the gloo group for small CPU messages


def setup(world: World, device: torch.device) -> torch.device:
    """Join the process group; returns the device this rank trains on."""
    global _control
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"rank {world.rank} wants cuda:{world.local_rank}, but this node has "
                            f"{torch.cuda.device_count()} GPU(s); start at most that many processes per node")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    timeout = dt.timedelta(seconds=timeout_s())
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, timeout=timeout, **kwargs)
    _control = dist.new_group(backend="gloo", timeout=timeout)  # its own group: votes never queue behind gradients
    return device


def teardown() -> None:
    global _control
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _control = None


def active() -> bool:
    """Whether this process is one rank of a data-parallel run (the group is initialised)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier(group=_control)


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (small picklable objects)."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_control)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_control)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place: a CPU tensor over gloo, a GPU one over NCCL."""
    import torch.distributed as dist

    dist.all_reduce(tensor, group=_control if tensor.device.type == "cpu" else None)
    return tensor


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is set on any rank (every rank gets the same answer)."""
    import torch
    import torch.distributed as dist

    box = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(box, group=_control)
    return bool(box.item())


def broadcast_(tensor: torch.Tensor, src: int = 0) -> None:
    import torch.distributed as dist

    dist.broadcast(tensor, src=src)


_LOST = ("gloo", "nccl", "connection closed", "connection reset", "broken pipe", "timed out", "timeout",
         "processgroup", "socket", "watchdog")


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another rank died or hung."""
    import torch.distributed as dist

    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(word in text for word in _LOST)


class StopVote:
    """Ranks agree to stop at the same step: each step every rank adds its local stop wish
    to a CPU all-reduce started at the previous step (so the vote never waits for the GPU and
    costs no round trip), and every rank reads the same total. A signal on any rank stops all
    of them one step later."""

    def __init__(self):
        self._flag = None
        self._work = None

    def __call__(self, wish: bool) -> bool:
        import torch
        import torch.distributed as dist

        agreed = False
        if self._work is not None:
            self._work.wait()
            agreed = bool(self._flag.item())
        self._flag = torch.tensor([1 if wish else 0], dtype=torch.int32)
        self._work = dist.all_reduce(self._flag, group=_control, async_op=True)
        return agreed

    def close(self) -> None:
        """Finish the vote under way (every rank calls this at the same point)."""
        if self._work is not None:
            self._work.wait()
            self._work = None


class FollowerRun:
    """The run folder as ranks other than 0 see it: they read it (config, checkpoints) and
    never write it, so every file has one writer."""

    def __init__(self, run):
        self._run = run

    def __getattr__(self, name):
        return getattr(self._run, name)

    def write_status(self, *args, **kwargs) -> None:
        pass

    def append_metrics(self, row) -> None:
        pass

    def truncate_metrics(self, step) -> None:
        pass

    def update_eval(self, values) -> None:
        pass

    def save_checkpoint(self, which, state):
        return self._run.checkpoint_path(which)
