"""Placement of queue jobs on device slots: one worker slot per GPU and per CPU share, which job a
free slot starts, and the GPUs a multi-GPU job's processes see."""
from __future__ import annotations

from typing import Any, Iterable

from workbench.errors import UserError


def is_gpu(device: str) -> bool:
    """Whether a slot is one GPU, a share of a multi-GPU job (tests patch this to use CPU slots)."""
    return device.startswith("cuda")


class Slot:
    def __init__(self, index: int, device: str):
        self.index, self.device = index, device
        self.gpu = is_gpu(device)
        self.job: Any = None  # running here, or reserved with other slots for a multi-GPU job
        self.thread = None

    def accepts(self, job, cpu_slots: bool, gpu_slots: bool) -> bool:
        want = (job.device or "auto").lower()
        if want == "auto":  # a GPU if there is one, as device = "auto" means everywhere
            return self.device != "cpu" or not gpu_slots
        if want == "cpu":  # on a CPU slot if there is one, else on CPU in whichever slot takes it
            return self.device == "cpu" or not cpu_slots
        if want == "cuda":
            return self.device.startswith("cuda")
        return want == self.device


def detect_slots(spec: list[str] | int | None, cpu_slots: int | None) -> tuple[list[Slot], int]:
    """The slots (``spec``: device strings, a number of CPU slots, or None for one per CUDA device
    plus ``cpu_slots`` CPU slots: 1 without a GPU, none with one) and the torch threads each job
    gets (0: torch's default; with several CPU slots, an even share of the cores)."""
    import torch

    if isinstance(spec, int):
        devices = ["cpu"] * spec
    elif spec:
        devices = [str(d) for d in spec]
    else:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = [f"cuda:{i}" for i in range(gpus)]
        devices += ["cpu"] * (cpu_slots if cpu_slots is not None else (0 if gpus else 1))
    if not devices:
        raise UserError("no slots to run jobs on: give cpu_slots >= 1 (--cpu-slots N)")
    cpu = devices.count("cpu")
    threads = max(1, torch.get_num_threads() // cpu) if cpu > 1 else 0
    return [Slot(i, d) for i, d in enumerate(devices)], threads


def place(jobs: Iterable, slot: Slot, slots: list[Slot], has_cpu: bool, has_gpu: bool,
          ready=lambda job: True) -> tuple[Any, list[Slot]]:
    """What the free ``slot`` starts now: (job, the slots it takes, ``slot`` first) or (None, []).

    Jobs go in queue order; ``ready(job)`` says whether a queued job may start (its run folder is
    not held by another process). A train job with ``gpus = N > 1`` starts once N GPU slots are
    free at once (this one among them); until then, while it is the first queued job a GPU slot
    could take, free GPU slots start nothing behind it and wait for it, so single-GPU jobs cannot
    starve it; jobs ahead of it in the order, and CPU slots, run as usual. Single-GPU jobs fill
    the GPU slots a multi-GPU job leaves. A job asking for more GPUs than there are slots: (job, []),
    to fail."""
    if slot.job is not None:
        return None, []
    gpu_slots = [s for s in slots if s.gpu]
    for job in jobs:
        if job.state != "queued" or job.active:
            continue
        if job.kind != "train" or job.gpus <= 1:
            if slot.accepts(job, has_cpu, has_gpu) and ready(job):
                return job, [slot]
            continue
        if job.gpus > len(gpu_slots):
            return job, []
        if not slot.gpu or not ready(job):
            continue
        free = [s for s in gpu_slots if s.job is None and s is not slot]
        if len(free) + 1 < job.gpus:
            return None, []
        return job, [slot, *free[:job.gpus - 1]]
    return None, []


def visible_devices(devices: list[str], parent: str | None) -> str:
    """CUDA_VISIBLE_DEVICES for slots ``cuda:i``: the i-th device visible to this process, so an
    existing CUDA_VISIBLE_DEVICES="3,5,7" and slots cuda:0, cuda:2 give "3,7"."""
    indices = [int(d.partition(":")[2] or 0) for d in devices]
    if parent is None or not parent.strip():
        return ",".join(map(str, indices))
    ids = [p.strip() for p in parent.split(",") if p.strip()]
    return ",".join(ids[i] for i in indices)
