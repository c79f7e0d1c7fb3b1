"""The queue as a DataTable: one row per job, keyed by job id, updated cell by cell so the
cursor and scroll position survive the 4 Hz refresh."""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.binding import Binding

from workbench.tui.widgets.table import ListTable

COLUMNS = [("id", "id"), ("name", "name"), ("model", "model"), ("dataset", "dataset"), ("device", "device"),
           ("state", "state"), ("progress", "step/total"), ("loss", "loss"), ("speed", "img/s"), ("eta", "ETA"),
           ("curve", "loss curve")]

STATE_STYLES = {"running": "bold green", "queued": "cyan", "waiting": "yellow", "paused": "magenta",
                "done": "dim green", "failed": "bold red", "cancelled": "dim"}


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def format_number(value: float | None, digits: int = 4) -> str:
    if value is None or value != value:
        return ""
    return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.3e}"


def format_rate(value: float | None) -> str:
    """Images per second: whole numbers with thousands separators ("4,310"); 3 digits below 100."""
    if value is None or value != value:
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def job_cells(job, curve: str = "", marked: bool = False) -> dict[str, object]:
    """The cells of one job's row, by column key (a marked job's run is overlaid in its curves)."""
    if job.kind == "eval":
        progress = f"{job.progress:.0%}" if job.state in ("running", "paused") else ""
    else:
        progress = f"{job.step}/{job.total}" if job.total else str(job.step)
    state = job.state + (f" → {job.after}" if job.state == "waiting" and job.after else "")
    job_id = Text.assemble(job.id, (" ●", "bold yellow")) if marked else job.id
    return {"id": job_id, "name": job.name or "", "model": job.model or "", "dataset": job.dataset or "",
            "device": job.device or "", "state": Text(state, style=STATE_STYLES.get(job.state, "")),
            "progress": progress, "loss": format_number(job.loss),
            "speed": format_rate(job.images_per_s) if job.state == "running" else "",
            "eta": format_eta(job.eta_s) if job.state == "running" else "",
            "curve": Text(curve, style="green")}


#: Columns dropped first when the table does not fit its width, in this order; id and state stay.
DROP_ORDER = ["dataset", "device", "model", "speed", "name", "eta", "loss", "curve", "progress"]
LABELS = dict(COLUMNS)
#: A long name (an evaluation's "eval-cvae-20261205-123937") is cut to no fewer cells than this
#: before the name column is dropped: without it a row says only "j2 queued".
MIN_NAME = 10


def fitting_layout(widths: dict[str, int], available: int) -> tuple[list[str], int | None]:
    """``fitting_columns``, except that where the name column would go it is first cut (to
    MIN_NAME cells at least): the columns, and the name's width when it is cut (else None)."""
    shown = fitting_columns(widths, available)
    if "name" in shown or widths.get("name", 0) <= MIN_NAME:
        return shown, None
    capped = {**widths, "name": MIN_NAME}
    cut = fitting_columns(capped, available)
    if "name" not in cut:
        return shown, None
    room = available - sum(capped.get(k, 0) + 2 for k in cut)
    return cut, min(widths["name"], MIN_NAME + room)


def clip(text: str, width: int | None) -> str:
    return text if width is None or len(text) <= width else text[:width - 1] + "…"


def fitting_columns(widths: dict[str, int], available: int) -> list[str]:
    """The column keys to show in ``available`` cells, given each column's natural width:
    all of them if they fit, else without the first columns of DROP_ORDER (2 cells of padding each)."""
    shown = [key for key, _ in COLUMNS]
    for key in DROP_ORDER:
        if sum(widths.get(k, 0) + 2 for k in shown) <= available:
            break
        shown.remove(key)
    return shown


class JobTable(ListTable):
    """Rows follow ``show(jobs, curves)``: added, updated in place, removed, in queue order. The
    columns that fit the width are shown (``fitting_columns``), re-chosen on every resize."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._cells: dict[str, dict[str, object]] = {}
        self._order: list[str] = []
        self.shown_columns: list[str] = []
        self.name_width: int | None = None  # the name column's cut, where it had to be cut

    def on_mount(self) -> None:
        self._fit()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.row_count > 0 if action == "select_cursor" else True  # no ⏎ Open on an empty queue

    def on_resize(self) -> None:
        self._fit()

    @property
    def selected_id(self) -> str | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        return self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value

    def _widths(self) -> dict[str, int]:
        widths = {key: len(label) for key, label in COLUMNS}
        for cells in self._cells.values():
            for key, value in cells.items():
                widths[key] = max(widths[key], len(str(value)))
        return widths

    def _fit(self) -> None:
        """Show the columns that fit; rebuild the table when that set changed (cursor kept by id)."""
        available = self.size.width or self.app.size.width
        shown, name_width = fitting_layout(self._widths(), available - 1)  # a cell for the scrollbar's edge
        if (shown, name_width) == (self.shown_columns, self.name_width):
            return
        keep = self.selected_id
        self.clear(columns=True)
        self.shown_columns, self.name_width = shown, name_width
        for key in shown:
            self.add_column(LABELS[key], key=key)
        for job_id in self._order:
            self.add_row(*(self._cell(job_id, k) for k in shown), key=job_id)
        if keep in self._order:
            self.move_cursor(row=self._order.index(keep), animate=False)

    def _cell(self, job_id: str, key: str):
        value = self._cells[job_id][key]
        return clip(value, self.name_width) if key == "name" else value

    def show(self, jobs: list, curves: dict[str, str], marked: set = frozenset()) -> None:
        order = [job.id for job in jobs]
        cells = {job.id: job_cells(job, curves.get(job.id, ""), bool(job.run_dir) and Path(job.run_dir) in marked)
                 for job in jobs}
        old_cells, self._cells = self._cells, cells
        if order != self._order:
            keep = self.selected_id
            self.clear()
            self._order = order
            for job_id in order:
                self.add_row(*(self._cell(job_id, k) for k in self.shown_columns), key=job_id)
            if keep in order:
                self.move_cursor(row=order.index(keep), animate=False)
        else:
            for job_id in order:
                old = old_cells.get(job_id, {})
                for key in self.shown_columns:
                    value, was = self._cell(job_id, key), old.get(key)
                    if key == "name" and isinstance(was, str):
                        was = clip(was, self.name_width)
                    if str(was) != str(value) or (isinstance(value, Text) and was != value):
                        self.update_cell(job_id, key, value, update_width=True)
        self._fit()
