"""Training curves of a run, live or replayed, from its metrics.jsonl.

Each run's file is tailed (only new lines, at most ``POLL_BUDGET`` bytes a time, in a worker
thread) into bounded ``Curves`` buffers twice a second, and the plots are redrawn only when a
buffer or a view setting changed: never once per training step.
Plots: training loss with validation NLL; the loss parts (recon, kl, commitment, codebook, ...);
VQ-VAE codebook perplexity, codes used and restarted (counts, never among the losses).
As in TensorBoard: an EMA smoothing (the raw line kept faint), a log axis whose ticks read real
values, markers for sparse series (validation), the legend under each plot, one x-range shared
by the plots (optionally the last N steps only), and a step cursor whose values are read out
under the plots. ``overlay`` adds other runs' loss and validation NLL to the first plot, one
colour and one short alias per run. Runs of one seed coincide: identical series are one line
named for both; a run that follows another for part of its steps (one still training, or trained
longer) is drawn with ``TWIN_MARKER`` where they coincide, and its legend says so, so that it
neither hides the other nor hides under it. The keys live on the screens (``CurveKeys``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static
from textual_plot import HiResMode, PlotWidget
from textual_plot.axis_formatter import NumericAxisFormatter

from workbench.runindex import Curves, MetricsTail
from workbench.tui.widgets.plotting import (
    SMOOTHING,
    ZOOMS,
    ColumnTicks,
    LogAxisFormatter,
    SpacedTicks,
    ema,
    format_value,
    last_steps,
    move_cursor,
    nearest,
    run_aliases,
    x_window,
)

#: Named ANSI colours, so the lines stay distinct on 16-colour terminals.
COLOURS = ["green", "red", "cyan", "yellow", "magenta", "blue", "bright_green", "bright_red", "bright_cyan"]
# Codebook use, and counters (codes restarted): counts, never drawn among the loss parts.
CODEBOOK = ("perplexity", "codes_used", "restarted")
POLL_BUDGET = 4 << 20  # bytes of a metrics file read per poll: a huge file catches up over several
# Not parts of the loss: the loss itself, the ELBO (its negative, for a VAE), the KL warm-up weight.
NOT_PARTS = {"loss", "nll", "bpd", "elbo", "beta", *CODEBOOK}
#: A series with fewer points than this is drawn with markers: a line through 3 points hides them.
SPARSE_POINTS = 30
MARKER = "●"
TWIN_MARKER = "◆"  # a run drawn over another's identical steps
PLOTS = ("loss", "parts", "codebook")
CURSOR_STYLE = "bright_white"
# Markers at most every this many columns: denser, they cover the other series (1500 validations
# of a long run in a 46-column plot hid the training line under a row of dots).
MARKER_COLUMNS = 3
AXIS_COLUMNS = 12  # the y axis and its labels, beside the data columns
# The cursor crosses the window in about this many presses, however many points are logged.
CURSOR_PRESSES = 40


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


@dataclass
class Line:
    """One series as drawn: its points, colour, legend label and whether it is sparse."""
    plot: str
    label: str
    xs: list[float]
    ys: list[float]
    colour: str
    validation: bool = False
    twin: str | None = None         # the label of an earlier line this one coincides with ...
    shared_to: float | None = None  # ... at every common step up to this one

    @property
    def sparse(self) -> bool:
        """Drawn as markers: a validation series, or any series with few points."""
        return self.validation or len(self.xs) < SPARSE_POINTS


def _log10(ys: list[float]) -> list[float]:
    return [math.log10(y) if y > 0 else float("nan") for y in ys]


class CurvesPanel(Vertical):
    """Up to three plots of one run, with other runs overlaid on demand."""

    DEFAULT_CSS = """
    CurvesPanel { height: 1fr; }
    CurvesPanel .plot-box { height: 1fr; min-height: 9; }
    CurvesPanel PlotWidget { height: 1fr; min-height: 8; }
    CurvesPanel .legend { height: auto; max-height: 3; padding: 0 1 0 10; }
    CurvesPanel #curves-status { height: 1; color: $text-muted; }
    CurvesPanel #curves-cursor { height: auto; max-height: 3; color: $text; display: none; }
    """

    log_scale: reactive[bool] = reactive(False)
    overlay: reactive[bool] = reactive(False)
    smoothing: reactive[float] = reactive(SMOOTHING[1])
    zoom: reactive[int] = reactive(0)  # index into ZOOMS
    cursor: reactive[float | None] = reactive(None)

    def __init__(self, run_dir: Path, overlay_dirs: list[Path] = (), **kwargs):
        super().__init__(**kwargs)
        self.main = RunCurves(run_dir)
        self.others = [RunCurves(p) for p in overlay_dirs if Path(p) != Path(run_dir)]
        self._drawn: tuple | None = None
        self._loaded = False
        self._polling = False  # a poll is in flight in a worker
        self.lines: list[Line] = []  # what the last draw drew, for the cursor's read-out
        self.window: tuple[float, float] | None = None  # the x-limits of every plot
        self.last_n: int | None = None  # the steps the window shows when zoomed to the last ones

    def compose(self) -> ComposeResult:
        yield Static("", id="curves-status")
        for name in PLOTS:
            with Vertical(id=f"box-{name}", classes="plot-box"):
                yield PlotWidget(id=f"plot-{name}")
                yield Static("", id=f"legend-{name}", classes="legend")
        yield Static("", id="curves-cursor")

    def on_mount(self) -> None:
        for name in ("parts", "codebook"):
            self.query_one(f"#box-{name}").display = False
        for plot in self.query(PlotWidget):
            plot.show_legend(is_visible=False)  # drawn under the plot instead: never over the newest data
            # One row for the y label, one for the x ticks (x is always the step): rows for the data.
            plot.margin_top, plot.margin_bottom = 1, 1
        prefs = getattr(self.app, "curve_prefs", None) or {}
        for key, value in prefs.items():  # the session's view settings (CurveKeys), kept across panels
            setattr(self, key, value)
        self.query_one("#curves-status", Static).update("reading metrics…")
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

    def _view_changed(self) -> None:
        self._drawn = None
        self.refresh_curves()

    watch_log_scale = watch_overlay = watch_smoothing = watch_zoom = watch_cursor = _view_changed

    # -- the view settings (the screens' keys call these) ------------------------------------------
    def cycle_smoothing(self) -> float:
        i = SMOOTHING.index(self.smoothing) if self.smoothing in SMOOTHING else 0
        self.smoothing = SMOOTHING[(i + 1) % len(SMOOTHING)]
        return self.smoothing

    def cycle_zoom(self) -> int:
        self.zoom = (self.zoom + 1) % len(ZOOMS)
        return self.zoom

    def move_cursor(self, delta: int) -> None:
        """Move the step cursor ``delta`` stops among the steps logged in the window."""
        lo, hi = self.window or (-math.inf, math.inf)
        steps = sorted({x for line in self.lines for x in line.xs if lo <= x <= hi})
        stride = max(1, len(steps) // CURSOR_PRESSES)
        self.cursor = move_cursor(steps, self.cursor, delta, stride)

    def on_plot_widget_scale_changed(self, event: PlotWidget.ScaleChanged) -> None:
        """A plot zoomed or panned by its own keys or the mouse: the others take its x-range."""
        self.window = (event.x_min, event.x_max)
        for plot in self.query(PlotWidget):
            if plot is not event.plot:
                plot.set_xlimits(event.x_min, event.x_max)

    # -- polling ----------------------------------------------------------------------------------
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
        state = (self.main.curves.version, self.size.width, self.log_scale, self.overlay, self.smoothing,
                 self.zoom, self.cursor,
                 tuple(o.curves.version for o in self.others) if self.overlay else ())
        if state != self._drawn and self.is_on_screen:  # behind another tab: draw when shown
            self._drawn = state
            self._draw()

    # -- what is drawn ------------------------------------------------------------------------------
    def collect_lines(self) -> list[Line]:
        """Every series of every plot, with its colour and legend label (pure: no drawing)."""
        curves = self.main.curves
        lines: list[Line] = []
        runs = [self.main, *self.others] if self.overlay else [self.main]
        aliases = run_aliases([r.run_dir for r in runs])
        for i, (run, alias) in enumerate(zip(runs, aliases)):
            for name, text, colour in (("train/loss", "train loss", COLOURS[0]), ("val/nll", "val NLL", COLOURS[1])):
                series = run.curves.get(name)
                if series is None or not len(series):
                    continue
                if len(runs) > 1:  # one colour per run: its train line and its val markers
                    colour, text = COLOURS[i % len(COLOURS)], f"{alias} {text.split()[0]}"
                xs, ys = series.points()
                lines.append(Line("loss", text, xs, ys, colour, validation=name.startswith("val/")))
        parts = [n for n in curves.names("train") if n.split("/", 1)[1] not in NOT_PARTS]
        codebook = [n for n in curves.names() if n.split("/", 1)[1] in CODEBOOK]
        for plot, names in (("parts", parts), ("codebook", codebook)):
            for alike, colour in zip(same_curves(curves, names), COLOURS):
                # Curves equal at every point (a VQ-VAE's codebook and commitment terms) are one line
                # with both names: drawn apart, the later would hide the earlier.
                xs, ys = curves.series[alike[0]].points()
                lines.append(Line(plot, " = ".join(n.split("/", 1)[1] for n in alike), xs, ys, colour))
        return _merge_identical(lines)

    def _draw(self) -> None:
        self.lines = lines = self.collect_lines()
        log = self.log_scale
        xs_all = [x for line in lines for x in line.xs]
        if xs_all:
            lo, hi = min(xs_all), max(xs_all)
            self.last_n = last_steps(hi - lo, ZOOMS[self.zoom])
            self.window = x_window(lo, hi, self.last_n)
        else:
            self.window, self.last_n = None, None
        ylabels = {"loss": "nats", "parts": "loss parts", "codebook": "codebook"}
        for name in PLOTS:
            mine = [line for line in lines if line.plot == name]
            self.query_one(f"#box-{name}").display = name == "loss" or bool(mine)
            plot = self.query_one(f"#plot-{name}", PlotWidget)
            plot.clear()
            for line in mine:
                self._plot_line(plot, line)
            plot.set_xlimits(*(self.window or (None, None)))
            if self.cursor is not None:
                plot.add_v_line(self.cursor, CURSOR_STYLE)
            plot.set_y_formatter(SpacedTicks(LogAxisFormatter() if log else NumericAxisFormatter(),
                                             lambda plot=plot: plot.query_one("#plot").content_size.height))
            plot.set_x_formatter(ColumnTicks(lambda plot=plot: plot.query_one("#plot").content_size.width))
            plot.set_ylabel(ylabels[name] + (" (log)" if log else ""))
            self.query_one(f"#legend-{name}", Static).update(self.legend(mine))
        self._update_status()
        self._update_cursor_line()

    def _plot_line(self, plot: PlotWidget, line: Line) -> None:
        xs, ys = line.xs, line.ys
        lo, hi = self.window or (-math.inf, math.inf)
        tf = _log10 if self.log_scale else list
        if line.twin is not None:
            # Over the steps it shares with an earlier run, markers: a line would hide that run's.
            (mx, my), (px, py) = split_twin(line, lo, hi)
            if len(px) > 1:
                plot.plot(px, tf(py), line_style=f"bold {line.colour}", hires_mode=HiResMode.BRAILLE)
            mx, my = thin_markers(mx, my, plot.size.width - AXIS_COLUMNS if plot.size.width else None)
            plot.scatter(mx, tf(my), marker=TWIN_MARKER, marker_style=f"bold {line.colour}", label=line.label)
            return
        if line.sparse:
            keep = [i for i, x in enumerate(xs) if lo <= x <= hi]
            px, py = [xs[i] for i in keep], tf([ys[i] for i in keep])
            if len(px) > 1:
                plot.plot(px, py, line_style=f"dim {line.colour}", hires_mode=HiResMode.BRAILLE)
            # A full-cell marker: a braille dot of one point is all but invisible.
            px, py = thin_markers(px, py, plot.size.width - AXIS_COLUMNS if plot.size.width else None)
            plot.scatter(px, py, marker=MARKER, marker_style=f"bold {line.colour}", label=line.label)
            return
        smooth = ema(ys, self.smoothing)  # over the whole series: zooming does not restart it
        keep = [i for i, x in enumerate(xs) if lo <= x <= hi]
        px = [xs[i] for i in keep]
        if self.smoothing > 0:
            plot.plot(px, tf([ys[i] for i in keep]), line_style=f"dim {line.colour}", hires_mode=HiResMode.BRAILLE)
        plot.plot(px, tf([smooth[i] for i in keep]), line_style=f"bold {line.colour}", hires_mode=HiResMode.BRAILLE,
                  label=line.label)

    @staticmethod
    def legend(lines: list[Line]) -> Text:
        """The legend line under a plot: a coloured mark (a line or a marker) and the label of each series."""
        text = Text()
        for line in lines:
            if text:
                text.append("  ")
            mark = TWIN_MARKER if line.twin else MARKER if line.sparse else "━━"
            text.append(f"{mark} ", style=f"bold {line.colour}")
            text.append(line.label)
            if line.twin:
                text.append(f" (= {line.twin} to step {line.shared_to:g})", style="dim")
        return text

    def _update_status(self) -> None:
        curves = self.main.curves
        train = curves.get("train/loss")
        val = curves.get("val/nll")
        # The run's name is in the title above (the detail's, the home pane's border): here it only
        # pushed the values out of a narrow pane.
        bits = []
        if train is not None and train.last is not None:
            bits.append(f"loss {train.last:.4g} @ {int(train.latest[0])}")
        if val is not None and val.last is not None:
            bits.append(f"val NLL {val.last:.4g} (best {min(val.ys + [val.last]):.4g})")
        if not curves.series:
            bits.append("no metrics logged yet")
        bits.append(f"smoothing {self.smoothing:g}")
        if self.log_scale:
            bits.append("log scale")
        if self.last_n is not None:
            bits.append(f"last {self.last_n} steps")
        if self.overlay:
            bits.append(f"overlay: {len(self.others)} run(s)" if self.others else "overlay: no other runs marked")
        self.query_one("#curves-status", Static).update(" · ".join(bits))

    def cursor_text(self) -> str:
        """"step 1200: train loss 234.1 (smoothed 236.2) · val NLL 236 @1180": for each series, its
        logged point nearest the cursor (and its step where that is not the cursor's)."""
        if self.cursor is None:
            return ""
        bits = []
        for line in self.lines:
            point = nearest(line.xs, line.ys, self.cursor)
            if point is None:
                continue
            x, y = point
            bit = f"{line.label} {format_value(y)}"
            if not line.sparse and self.smoothing > 0:
                smooth = ema(line.ys, self.smoothing)[line.xs.index(x)]
                bit += f" (smoothed {format_value(smooth)})"
            if x != self.cursor:
                bit += f" @{x:g}"
            bits.append(bit)
        return f"step {self.cursor:g}: " + " · ".join(bits)

    def _update_cursor_line(self) -> None:
        line = self.query_one("#curves-cursor", Static)
        line.display = self.cursor is not None
        line.update(self.cursor_text())


def thin_markers(xs: list[float], ys: list, columns: int | None) -> tuple[list[float], list]:
    """Every k-th point (the newest always among them) so that markers are at least
    MARKER_COLUMNS apart on average in ``columns`` data columns; all of them when they are, or
    when the width is not known yet."""
    if columns is None:
        return xs, ys
    limit = max(1, columns // MARKER_COLUMNS)
    if len(xs) <= limit:
        return xs, ys
    stride = math.ceil(len(xs) / limit)
    keep = range(len(xs) - 1, -1, -stride)
    return [xs[i] for i in reversed(keep)], [ys[i] for i in reversed(keep)]


def shared_to(a: Line, b: Line) -> float | None:
    """The last step up to which ``b`` coincides with ``a`` (the same value at every step both
    logged, at least two of them), or None where they differ."""
    values = dict(zip(a.xs, a.ys))
    common = [(x, y) for x, y in zip(b.xs, b.ys) if x in values]
    if len(common) < 2 or any(values[x] != y for x, y in common):
        return None
    return max(x for x, _ in common)


def split_twin(line: Line, lo: float = -math.inf, hi: float = math.inf) -> tuple[tuple[list, list], tuple[list, list]]:
    """A twin line's points in [lo, hi]: those up to ``shared_to`` (drawn as markers) and those
    from it on (drawn as a line, from the last shared point so that it joins)."""
    keep = [(x, y) for x, y in zip(line.xs, line.ys) if lo <= x <= hi]
    shared = [(x, y) for x, y in keep if x <= line.shared_to]
    rest = [(x, y) for x, y in keep if x >= line.shared_to]
    return ([x for x, _ in shared], [y for _, y in shared]), ([x for x, _ in rest], [y for _, y in rest])


def _merge_identical(lines: list[Line]) -> list[Line]:
    """Lines of one plot with the same points (two runs of one seed) drawn once, with both labels:
    drawn apart, the later would hide the earlier. A line that coincides with an earlier one on
    the steps both logged (a run of one seed that stopped earlier, or went on) is kept, marked
    as that one's twin up to the last shared step."""
    merged: list[Line] = []
    for line in lines:
        same = [m for m in merged if m.plot == line.plot and m.validation == line.validation]
        twin = next((m for m in same if m.xs == line.xs and m.ys == line.ys), None)
        if twin is not None:
            twin.label = f"{twin.label} = {line.label}"
            continue
        copy = Line(line.plot, line.label, line.xs, line.ys, line.colour, line.validation)
        for earlier in same:
            to = shared_to(earlier, line)
            if to is not None:
                copy.twin, copy.shared_to = earlier.label.split(" = ")[0], to
                break
        merged.append(copy)
    return merged


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
