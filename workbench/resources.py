"""Resource meters, as nvitop shows them: each GPU's utilisation and memory (NVML, through
nvidia-ml-py, imported only here and only when asked), and a process's CPU and RAM (psutil),
each with a short bounded history.

    monitor = ResourceMonitor(pid)          # nvml=None, psutil=None: the real modules, if present
    snap = monitor.sample()                 # call it from a worker thread, 1-4 times a second
    snap.gpus                               # [] and snap.gpu_note = "no GPU" without one: never an error

No Textual and no torch here: the app's meters (workbench.tui.widgets.meters) draw what this returns.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

HISTORY = 60  # samples kept per meter: 30 s at 2 Hz


@dataclass
class GpuReading:
    index: int
    name: str
    util: float        # percent
    mem_used: int      # bytes
    mem_total: int     # bytes


@dataclass
class Snapshot:
    gpus: list[GpuReading] = field(default_factory=list)
    gpu_note: str = ""                 # "no GPU", or why NVML could not be read
    cpu: float | None = None           # percent of one core (psutil's convention: 200 = two cores)
    rss: int | None = None             # bytes
    proc_note: str = ""
    history: dict[str, list[float]] = field(default_factory=dict)  # a copy: safe to read on another thread


def _import_nvml():
    try:
        import pynvml  # nvidia-ml-py

        return pynvml
    except ImportError:
        return None


def _import_psutil():
    try:
        import psutil

        return psutil
    except ImportError:
        return None


class ResourceMonitor:
    """Samples GPUs and one process; keeps the last HISTORY readings of each meter."""

    def __init__(self, pid: int | None = None, *, nvml=None, psutil=None, history: int = HISTORY):
        self.pid = os.getpid() if pid is None else pid
        self._nvml = nvml
        self._psutil = psutil
        self._nvml_ready: bool | None = None  # None: not tried yet
        self._nvml_note = "no GPU"
        self._proc = None
        self.history: dict[str, deque] = {}
        self._size = history

    def _keep(self, name: str, value: float) -> None:
        self.history.setdefault(name, deque(maxlen=self._size)).append(value)

    def set_pid(self, pid: int) -> None:
        if pid != self.pid:
            self.pid, self._proc = pid, None
            for name in ("cpu", "rss"):
                self.history.pop(name, None)

    # -- GPUs ----------------------------------------------------------------------------------
    def _nvml_start(self) -> bool:
        if self._nvml_ready is None:
            nvml = self._nvml if self._nvml is not None else _import_nvml()
            self._nvml = nvml
            if nvml is None:
                self._nvml_ready, self._nvml_note = False, "no GPU (nvidia-ml-py not installed)"
            else:
                try:
                    nvml.nvmlInit()
                    count = nvml.nvmlDeviceGetCount()
                    self._nvml_ready = count > 0
                    self._nvml_note = "" if count else "no GPU"
                except Exception:  # NVMLError: no driver, no device
                    self._nvml_ready, self._nvml_note = False, "no GPU"
        return bool(self._nvml_ready)

    def gpus(self) -> list[GpuReading]:
        if not self._nvml_start():
            return []
        nvml, readings = self._nvml, []
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                name = nvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
                util = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                readings.append(GpuReading(i, name, util, int(mem.used), int(mem.total)))
        except Exception as e:  # a device that went away mid-read: show what was read
            self._nvml_note = f"NVML: {type(e).__name__}"
        return readings

    # -- the process ---------------------------------------------------------------------------
    def process(self) -> tuple[float | None, int | None, str]:
        psutil = self._psutil if self._psutil is not None else _import_psutil()
        self._psutil = psutil
        if psutil is None:
            return None, None, "psutil not installed"
        try:
            if self._proc is None:
                self._proc = psutil.Process(self.pid)
                self._proc.cpu_percent(None)  # the first call starts the measurement
            proc = self._proc
            with proc.oneshot():
                cpu = float(proc.cpu_percent(None))
                rss = int(proc.memory_info().rss)
            return cpu, rss, ""
        except Exception as e:  # NoSuchProcess, AccessDenied
            self._proc = None
            return None, None, f"process {self.pid}: {type(e).__name__}"

    def sample(self) -> Snapshot:
        snap = Snapshot(gpus=self.gpus())
        snap.gpu_note = "" if snap.gpus else self._nvml_note or "no GPU"
        for g in snap.gpus:
            self._keep(f"gpu{g.index}.util", g.util)
            self._keep(f"gpu{g.index}.mem", 100.0 * g.mem_used / g.mem_total if g.mem_total else 0.0)
        snap.cpu, snap.rss, snap.proc_note = self.process()
        if snap.cpu is not None:
            self._keep("cpu", snap.cpu)
            self._keep("rss", float(snap.rss))
        snap.history = {name: list(values) for name, values in self.history.items()}
        return snap


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
