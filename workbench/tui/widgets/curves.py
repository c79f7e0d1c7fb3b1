"""Training curves of a run, live or replayed, from its metrics.jsonl.

Each run's file is tailed (only new lines, at most ``POLL_BUDGET`` bytes a time, in a worker
thread) into bounded ``Curves`` buffers twice a second, and the plots are redrawn only when a
buffer changed: never once per training step.
Plots: training loss with validation NLL; the loss parts (recon, kl, commitment, codebook, ...);
VQ-VAE codebook perplexity and codes used. ``log_scale`` plots log10 of the values; ``overlay``
adds other runs' loss and validation NLL to the first plot, to compare them.
"""
from __future__ import annotations

import math
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static
from textual_plot import HiResMode, PlotWidget

from workbench.runindex import Curves, MetricsTail

#: Named ANSI colours, so the lines stay distinct on 16-colour terminals.
COLOURS = ["green", "red", "cyan", "yellow", "magenta", "blue", "bright_green", "bright_red", "bright_cyan"]
# Codebook use, and counters (codes restarted): counts, never drawn among the loss parts.
CODEBOOK = ("perplexity", "codes_used", "restarted")
POLL_BUDGET = 4 << 20  # bytes of a metrics file read per poll: a huge file catches up over several
# Not parts of the loss: the loss itself, the ELBO (its negative, for a VAE), the KL warm-up weight.
NOT_PARTS = {"loss", "nll", "bpd", "elbo", "beta", *CODEBOOK}


class RunCurves:
    """One run's metrics file, tailed into bounded buffers."""

    def __init__(self, run_dir: Path, capacity: int = 512):
        self.run_dir = Path(run_dir)
        self.capacity = capacity
        self.tail = MetricsTail(self.run_dir / "metrics.jsonl")
        self.curves = Curves(capacity)

    def poll(self, budget: int | None = None) -> bool:
        """Read the rows appended since the last poll (at most ``budget`` bytes of them)."""
        rows = self.tail.read_new(budget)
        if self.tail.restarted:
            self.curves.clear()
        self.curves.feed(rows)
        return bool(rows) or self.tail.restarted


def _transform(ys: list[float], log: bool) -> list[float]:
    if not log:
        return ys
    return [math.log10(y) if y > 0 else float("nan") for y in ys]


class CurvesPanel(Vertical):
    """Up to three plots of one run, with other runs overlaid on demand."""

    DEFAULT_CSS = """
    CurvesPanel { height: 1fr; }
    CurvesPanel PlotWidget { height: 1fr; min-height: 8; }
    CurvesPanel #curves-status { height: 1; color: $text-muted; }
    """

    log_scale: reactive[bool] = reactive(False)
    overlay: reactive[bool] = reactive(False)

    def __init__(self, run_dir: Path, overlay_dirs: list[Path] = (), **kwargs):
        super().__init__(**kwargs)
        self.main = RunCurves(run_dir)
        self.others = [RunCurves(p) for p in overlay_dirs if Path(p) != Path(run_dir)]
        self._drawn: tuple | None = None
        self._loaded = False
        self._polling = False  # a poll is in flight in a worker

    def compose(self) -> ComposeResult:
        yield Static("", id="curves-status")
        yield PlotWidget(id="plot-loss")
        yield PlotWidget(id="plot-parts")
        yield PlotWidget(id="plot-codebook")

    def on_mount(self) -> None:
        for plot_id in ("plot-parts", "plot-codebook"):
            self.query_one(f"#{plot_id}").display = False
        self.query_one("#curves-status", Static).update(f"{self.main.run_dir.name} · reading metrics…")
        self._load()
        self.set_interval(0.5, self.refresh_curves)

    @work(thread=True, exit_on_error=False, group="curves-load")
    def _load(self) -> None:
        """The first read of a long run's metrics (a million rows take seconds) off the UI thread;
        the panel takes the filled buffers over in one assignment."""
        loaded = RunCurves(self.main.run_dir, self.main.capacity)
        loaded.poll()  # to the end, in bounded chunks; over-long lines skipped
        self.app.call_from_thread(self._take_over, loaded)

    def _take_over(self, loaded: RunCurves) -> None:
        self.main = loaded
        self._loaded = True
        self.refresh_curves()

    def on_show(self) -> None:
        self.call_after_refresh(self.refresh_curves)

    def set_overlay_dirs(self, dirs: list[Path]) -> None:
        known = {c.run_dir: c for c in self.others}
        self.others = [known.get(Path(p)) or RunCurves(Path(p)) for p in dirs if Path(p) != self.main.run_dir]
        self._drawn = None
        self.refresh_curves()

    def watch_log_scale(self) -> None:
        self._drawn = None
        self.refresh_curves()

    def watch_overlay(self) -> None:
        self._drawn = None
        self.refresh_curves()

    def refresh_curves(self) -> None:
        """Poll the metrics files in a worker (one at a time), then redraw what changed."""
        if not self.is_mounted or not self._loaded:
            return
        if not self._polling:  # else the poll in flight redraws when it ends
            self._polling = True
            self._poll(self.main, list(self.others) if self.overlay else [])

    @work(thread=True, exit_on_error=False, group="curves-poll")
    def _poll(self, main: RunCurves, others: list[RunCurves]) -> None:
        try:
            for run in [main, *others]:
                run.poll(POLL_BUDGET)
        finally:
            # call_from_thread waits for the redraw: the buffers never change while they are drawn.
            self.app.call_from_thread(self._polled)

    def _polled(self) -> None:
        self._polling = False
        self._redraw_if_changed()

    def _redraw_if_changed(self) -> None:
        if not self.is_mounted:
            return
        state = (self.main.curves.version, self.log_scale, self.overlay,
                 tuple(o.curves.version for o in self.others) if self.overlay else ())
        if state != self._drawn and self.is_on_screen:  # behind another tab: draw when shown
            self._drawn = state
            self._draw()

    def _draw(self) -> None:
        curves = self.main.curves
        log = self.log_scale
        label = "log10 " if log else ""
        loss = self.query_one("#plot-loss", PlotWidget)
        loss.clear()
        lines = [("train/loss", "train loss"), ("val/nll", "val NLL")]
        colour = iter(COLOURS)
        for name, text in lines:
            series = curves.get(name)
            if series is not None and len(series):
                xs, ys = series.points()
                loss.plot(xs, _transform(ys, log), line_style=next(colour), hires_mode=HiResMode.BRAILLE, label=text)
        overlaid = 0
        if self.overlay:
            for other in self.others:
                for name, text in lines:
                    series = other.curves.get(name)
                    if series is not None and len(series):
                        xs, ys = series.points()
                        loss.plot(xs, _transform(ys, log), line_style=next(colour, "white"),
                                  hires_mode=HiResMode.BRAILLE, label=f"{other.run_dir.name[:24]} {text}")
                        overlaid += 1
        loss.set_xlabel("step")
        loss.set_ylabel(f"{label}nats")
        loss.show_legend()

        parts = [n for n in curves.names("train") if n.split("/", 1)[1] not in NOT_PARTS]
        self._draw_group("#plot-parts", parts, f"{label}loss parts", log)
        codebook = [n for n in curves.names() if n.split("/", 1)[1] in CODEBOOK]
        self._draw_group("#plot-codebook", codebook, f"{label}codebook", log)

        train = curves.get("train/loss")
        val = curves.get("val/nll")
        bits = [f"{self.main.run_dir.name}"]
        if train is not None and train.last is not None:
            bits.append(f"loss {train.last:.4g} @ {int(train.latest[0])}")
        if val is not None and val.last is not None:
            bits.append(f"val NLL {val.last:.4g} (best {min(val.ys + [val.last]):.4g})")
        if not curves.series:
            bits.append("no metrics logged yet")
        bits.append("log scale" if log else "linear scale")
        if self.overlay:
            bits.append(f"overlay: {len(self.others)} run(s)" if self.others else "overlay: no other runs marked")
        self.query_one("#curves-status", Static).update(" · ".join(bits))

    def _draw_group(self, selector: str, names: list[str], ylabel: str, log: bool) -> None:
        plot = self.query_one(selector, PlotWidget)
        plot.display = bool(names)
        if not names:
            return
        plot.clear()
        for names_alike, colour in zip(same_curves(self.main.curves, names), COLOURS):
            # Curves equal at every point (a VQ-VAE's codebook and commitment terms) are one line
            # with both names: drawn apart, the later would hide the earlier.
            xs, ys = self.main.curves.series[names_alike[0]].points()
            plot.plot(xs, _transform(ys, log), line_style=colour, hires_mode=HiResMode.BRAILLE,
                      label=" = ".join(n.split("/", 1)[1] for n in names_alike))
        plot.set_xlabel("step")
        plot.set_ylabel(ylabel)
        plot.show_legend()


def same_curves(curves: Curves, names: list[str]) -> list[list[str]]:
    """``names`` grouped so that series with identical points share a group, in first-seen order."""
    groups: list[list[str]] = []
    for name in names:
        points = curves.series[name].points()
        for group in groups:
            if curves.series[group[0]].points() == points:
                group.append(name)
                break
        else:
            groups.append([name])
    return groups
