"""MetersPanel: GPU utilisation and memory per device, and the job's process CPU and RAM, each
with a short history (as nvitop draws them). Sampled in a thread twice a second, drawn from the
latest snapshot by a 2 Hz timer; "no GPU" without one, never an error."""
from __future__ import annotations

import threading

from rich.text import Text
from textual.widgets import Static

from workbench.resources import ResourceMonitor, Snapshot, human_bytes

BLOCKS = " ▁▂▃▄▅▆▇█"
PERIOD_S = 0.5


def history_bar(values, width: int, hi: float = 100.0) -> str:
    """The last ``width`` values on a fixed 0..hi scale (a flat 0 % line stays at the bottom)."""
    values = list(values)[-width:]
    cells = [BLOCKS[max(0, min(8, round(v / hi * 8)))] if hi > 0 else BLOCKS[0] for v in values]
    return "".join(cells).rjust(width, " ")


def level_style(percent: float) -> str:
    return "red" if percent >= 90 else "yellow" if percent >= 60 else "green"


def render_snapshot(snap: Snapshot | None, width: int) -> Text:
    """The meters as text lines, each ``width`` cells at most: a label column, the value, and
    the history bar in the space left (left out below 3 cells)."""
    if snap is None:
        return Text("reading meters…", style="dim")
    history = snap.history
    bar_w = max(0, min(40, width - 22))
    lines: list[Text] = []

    def line(label: str, value: str, style: str, name: str, hi: float = 100.0, bar_style: str | None = None) -> None:
        row = Text(f"{label:<5}", style="bold")
        row.append(f"{value:<16} ", style=style)
        if bar_w >= 3:
            row.append(history_bar(history.get(name, ()), bar_w, hi), style=bar_style or style)
        lines.append(row)

    for g in snap.gpus:
        mem = 100.0 * g.mem_used / g.mem_total if g.mem_total else 0.0
        line(f"GPU{g.index}", f"{g.util:3.0f}% util", level_style(g.util), f"gpu{g.index}.util")
        line("", f"{g.mem_used / 2**30:.1f}/{g.mem_total / 2**30:.0f} GiB", level_style(mem), f"gpu{g.index}.mem")
    if not snap.gpus:
        lines.append(Text(snap.gpu_note or "no GPU", style="dim"))
    if snap.cpu is None:
        lines.append(Text(f"process: {snap.proc_note or 'not measured'}", style="dim"))
    else:
        cpu_hist = history.get("cpu", ())
        line("CPU", f"{snap.cpu:4.0f}%", level_style(min(100.0, snap.cpu)), "cpu", max([100.0, *cpu_hist]), "cyan")
        rss_hist = history.get("rss", ())
        line("RAM", human_bytes(snap.rss), "", "rss", max(rss_hist, default=1.0) or 1.0, "magenta")
    return Text("\n").join(lines)


class MetersPanel(Static):
    """The meters of ``monitor`` (a ResourceMonitor; a fake one in tests)."""

    DEFAULT_CSS = "MetersPanel { height: auto; min-height: 3; padding: 0 1; }"

    def __init__(self, monitor: ResourceMonitor | None = None, **kwargs) -> None:
        super().__init__("reading meters…", **kwargs)
        self.monitor = monitor or ResourceMonitor()
        self.snapshot: Snapshot | None = None
        self._stop = threading.Event()
        self._drawn = None

    def on_mount(self) -> None:
        self._thread = threading.Thread(target=self._sample_loop, name="genwb-meters", daemon=True)
        self._thread.start()
        self.set_interval(PERIOD_S, self._draw)

    def on_unmount(self) -> None:
        self._stop.set()

    def _sample_loop(self) -> None:
        """NVML and psutil calls take milliseconds (more on a busy machine): never on the UI thread."""
        while not self._stop.is_set():
            try:
                self.snapshot = self.monitor.sample()  # one assignment: the UI reads a whole snapshot
            except Exception as e:  # a meter must never take the app down
                self.snapshot = Snapshot(gpu_note=f"meters failed: {type(e).__name__}")
            self._stop.wait(PERIOD_S)

    def _draw(self) -> None:
        snap = self.snapshot
        key = (id(snap), self.size.width)
        if snap is None or key == self._drawn:
            return
        self._drawn = key
        self.update(render_snapshot(snap, self.content_size.width))
