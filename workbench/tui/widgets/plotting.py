"""Pure helpers of the curves panel, each as TensorBoard does it: the debiased EMA of its
smoothing slider, a log axis whose ticks read real values (20, 50, 100 nats; 1e3), the window of
"the last N steps", short aliases for overlaid runs, and the values nearest a cursor step."""
from __future__ import annotations

import math
import re
from math import ceil, floor, log10
from pathlib import Path
from typing import Sequence

from textual_plot.axis_formatter import AxisFormatter, NumericAxisFormatter

#: The smoothing weights the smoothing key cycles through (TensorBoard's slider defaults to 0.6).
SMOOTHING = (0.0, 0.6, 0.9, 0.99)
#: The x-windows the zoom key cycles through: the whole run, then the last half and tenth of it
#: (as a round number of steps, see ``last_steps``).
ZOOMS = (None, 0.5, 0.1)
_STAMP = re.compile(r"-\d{8}-\d{6}$")


def ema(ys: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average started at 0 and debiased, so the
    first points are not pulled towards 0 (``s_t = (w s_{t-1} + (1-w) y_t) / (1 - w^t)``, with
    ``s_0 = 0`` kept undebiased between steps). Non-finite values pass through, uncounted."""
    if weight <= 0:
        return list(ys)
    last, count, out = 0.0, 0, []
    for y in ys:
        if not math.isfinite(y):
            out.append(y)
            continue
        last = last * weight + (1 - weight) * y
        count += 1
        debias = 1.0 if weight == 1 else 1 - weight ** count
        out.append(last / debias)
    return out


def format_value(v: float) -> str:
    """A value in 4 significant digits: "20", "2.5", "234.1", "1e4" (not "1e+04"), "1.5e-05"."""
    text = f"{v:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


class LogAxisFormatter(AxisFormatter):
    """Ticks of an axis that holds log10 of the values, placed at round real values and labelled
    with them: 20, 50, 100, 200 (or 1e3, 1e4 over many decades), never the log10 numbers."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        decades = max_ - min_
        if decades < 0.3:  # less than a factor 2: the axis is nearly linear, so are its ticks
            real = NumericAxisFormatter().get_ticks(10.0 ** min_, 10.0 ** max_, min(max_ticks, 5))
            return [log10(v) for v in real if v > 0]
        # Round values about evenly spaced on the log axis (a label per row at most, on short plots).
        choices = ((1, 2, 5), (1,)) if decades >= 1 else ((1, 1.5, 2, 3, 5, 7), (1, 2, 5), (1, 3))
        for mantissas in choices:
            ticks = [log10(m * 10.0 ** e) for e in range(floor(min_) - 1, ceil(max_) + 1) for m in mantissas]
            ticks = [t for t in ticks if min_ - 1e-9 <= t <= max_ + 1e-9]
            if len(ticks) <= min(max_ticks, 6):
                return ticks
        stride = ceil(len(ticks) / min(max_ticks, 6))  # many decades: every stride-th one
        return ticks[::stride]

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        reals = [10.0 ** t for t in ticks]
        if len(reals) >= 2 and reals[-1] / reals[0] < 2:  # linear steps: as many decimals as the step needs
            step = reals[1] - reals[0]
            decimals = max(0, -floor(log10(step) + 1e-9)) if step > 0 else 0
            return [f"{v:.{decimals}f}" for v in reals]
        return [format_value(v) for v in reals]


MIN_TICK_ROWS = 3


class SpacedTicks(AxisFormatter):
    """Ticks at least MIN_TICK_ROWS rows apart on a plot of ``rows()`` data rows (read at each redraw).
    textual-plot asks for 8 ticks whatever the height, and its steps stop at what fits 8: on a
    9-row plot, ticks every 5 nats fell 1 and 2 rows apart in turn, an axis that reads as uneven.
    A linear axis takes the smallest 1-2-2.5-5 step that far apart (labels are placed on whole rows,
    so two rows apart came out as one and three); two ticks at least from 12 rows up, one
    below; a log axis (``inner``
    another formatter) is asked for at most one tick every three rows."""

    def __init__(self, inner: AxisFormatter, rows) -> None:
        self.inner, self.rows = inner, rows

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        rows = max(self.rows(), 1)
        if not isinstance(self.inner, NumericAxisFormatter):
            return self.inner.get_ticks(min_, max_, max(2, min(max_ticks, rows // MIN_TICK_ROWS + 1)))
        span = max_ - min_
        if not span > 0:
            return [min_]
        exponent = floor(log10(MIN_TICK_ROWS * span / rows))
        steps = [m * 10.0 ** e for e in (exponent - 1, exponent, exponent + 1) for m in (1, 2, 2.5, 5)]
        wide = next(i for i, step in enumerate(steps) if step * rows >= MIN_TICK_ROWS * span - 1e-12)
        for step in reversed(steps[:wide + 1]):  # on a very short plot a step that far apart may hold no tick
            ticks = [round(k * step, 12) for k in range(ceil(min_ / step - 1e-9), floor(max_ / step + 1e-9) + 1)]
            if ticks:
                return ticks
        return [min_]

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return self.inner.get_labels_for_ticks(ticks)


class ColumnTicks(AxisFormatter):
    """x ticks whose labels stand at least two cells apart in ``columns()`` data columns (read at
    each redraw): textual-plot's steps aim at five intervals whatever the width, so in a 35-column
    plot of 8000 steps the labels ran together ("1000200030004000")."""

    def __init__(self, columns) -> None:
        self.columns = columns
        self.inner = NumericAxisFormatter()

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        span = max_ - min_
        if not span > 0:
            return [min_]
        cols = max(self.columns(), 1)
        first = floor(log10(span / max_ticks))
        for exponent in range(first, first + 12):
            for mantissa in (1, 2, 5):  # 2.5 would need a decimal more than its labels get
                step = mantissa * 10.0 ** exponent
                ticks = [round(k * step, 12) for k in range(ceil(min_ / step - 1e-9), floor(max_ / step + 1e-9) + 1)]
                if len(ticks) > max_ticks:
                    continue
                if len(ticks) < 2:
                    return ticks or [min_]
                labels = self.inner.get_labels_for_ticks(ticks)
                width = max(len(label) for label in labels)
                if step / span * cols >= width + 2:
                    # A label is centred on its tick: one too near the right edge would be cut.
                    if len(ticks) > 2 and (max_ - ticks[-1]) / span * cols < len(labels[-1]) / 2:
                        ticks = ticks[:-1]
                    return ticks
        return [min_]

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return self.inner.get_labels_for_ticks(ticks)


def nice_floor(value: float) -> int:
    """``value`` rounded down to one significant digit (at least 1): 99 -> 90, 2400 -> 2000."""
    if value < 1:
        return 1
    power = 10 ** floor(log10(value))
    return int(value // power * power)


def last_steps(span: float, fraction: float | None) -> int | None:
    """How many of the last steps the zoom ``fraction`` of a run spanning ``span`` steps shows:
    a round number (``nice_floor``), None for the whole run."""
    if fraction is None or span <= 0:
        return None
    return nice_floor(span * fraction)


def x_window(xs_min: float, xs_max: float, last: int | None) -> tuple[float, float]:
    """The x-limits every plot of a panel shares: the whole run, or its last ``last`` steps."""
    lo = xs_min if last is None else max(xs_min, xs_max - last)
    if lo >= xs_max:  # one step only: a window around it, so that its point is drawn inside
        return lo - 1, xs_max + 1
    return lo, xs_max


def run_aliases(run_dirs: Sequence[Path]) -> list[str]:
    """Short names of overlaid runs: the run's name without its timestamp, and ``name#2``,
    ``name#3`` for later runs of the same name (the same preset and seed, run again)."""
    seen: dict[str, int] = {}
    aliases = []
    for path in run_dirs:
        name = _STAMP.sub("", Path(path).name) or Path(path).name
        seen[name] = seen.get(name, 0) + 1
        aliases.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return aliases


def nearest(xs: Sequence[float], ys: Sequence[float], step: float) -> tuple[float, float] | None:
    """The logged point of a series nearest ``step`` (the earlier one on a tie)."""
    if not xs:
        return None
    i = min(range(len(xs)), key=lambda k: (abs(xs[k] - step), xs[k]))
    return xs[i], ys[i]


def move_cursor(steps: Sequence[float], current: float | None, delta: int, stride: int = 1) -> float | None:
    """The cursor's next step among the logged ``steps`` (sorted): from the newest when there is
    no cursor yet, else ``delta * stride`` logged steps on from the one nearest ``current``."""
    if not steps:
        return None
    if current is None:
        return steps[-1]
    i = min(range(len(steps)), key=lambda k: abs(steps[k] - current))
    return steps[max(0, min(len(steps) - 1, i + delta * stride))]
