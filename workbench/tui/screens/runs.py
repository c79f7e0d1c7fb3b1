"""The runs browser: every run folder under the runs folder, sortable and filterable from the
keyboard; opens a run's detail, resumes an unfinished run as a job, marks runs to compare.

The folders are scanned (``workbench.runindex.scan_runs``) in a thread every few seconds, so a
large metrics file never stalls the screen. Each row shows the run's live state: its queue job's
state and step where the queue has one, else status.json corrected by its writer lease
(``workbench.runs.live_state``: "interrupted" when the process that wrote it died) and the last
step of its metrics; and who writes it now. ``R`` on a run another process writes is refused,
naming the holder. Sort and filter persist (``workbench.tui.settings.save_view``).

Columns drop, when the terminal is too narrow for all of them, in the order of ``DROP_ORDER``;
the run's name and its state never drop."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from workbench.jobs import FINISHED
from workbench.lease import Holder
from workbench.runindex import RunRow, has_checkpoint, scan_runs
from workbench.runs import live_state
from workbench.tui import settings
from workbench.tui.widgets.footer import KeyFooter
from workbench.tui.widgets.job_table import format_number
from workbench.tui.widgets.table import ListTable


class OpenTable(ListTable):
    """A DataTable whose enter (open the row) shows in the footer."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]


RESCAN_S = 3.0

#: (column key, heading, sort key)
COLUMNS = [
    ("name", "run", lambda r: r.name),
    ("model", "model", lambda r: r.model),
    ("dataset", "dataset", lambda r: (r.dataset, r.binarize)),
    ("state", "state", lambda r: r.state),
    ("steps", "steps", lambda r: r.step),
    ("nll", "best val NLL", lambda r: (r.best_val_nll is None, r.best_val_nll or 0.0)),
    ("bpd", "bits/dim", lambda r: (r.bpd is None, r.bpd or 0.0)),
    ("fid", "FID", lambda r: (r.fid is None, r.fid or 0.0)),
    ("writer", "writer", None),  # the lease's holder: sorted by RunsScreen.visible
]
#: The columns a narrow terminal drops, first to last; "name" and "state" never drop.
DROP_ORDER = ["dataset", "model", "bpd", "writer", "nll", "fid", "steps"]


def writer_text(holder: Holder | None) -> str:
    """Who writes a run now, short: "pid 4242@gpu-01", "job j3" (this app), or ""."""
    if holder is None:
        return ""
    if holder.here:
        return holder.label or "this app"
    return f"pid {holder.pid}" + (f"@{holder.host}" if holder.host else "")


def with_live_state(row: RunRow) -> tuple[RunRow, Holder | None]:
    """``row`` with the state a reader should show (see workbench.runs.live_state), and its holder."""
    state, holder = live_state(row.path)
    return (dataclasses.replace(row, state=state) if state != row.state else row), holder


def fitting_columns(widths: dict[str, int], room: int) -> list[str]:
    """The column keys to show in ``room`` cells: all of COLUMNS, less those DROP_ORDER drops first."""
    keys = [key for key, _, _ in COLUMNS]
    for key in DROP_ORDER:
        if sum(widths.get(k, 0) + 2 for k in keys) + 3 <= room:  # + the mark column
            break
        keys.remove(key)
    return keys


def matches(row: RunRow, text: str) -> bool:
    haystack = f"{row.name} {row.model} {row.dataset} {row.binarize} {row.state}".lower()
    return all(word in haystack for word in text.lower().split())


def sorted_rows(rows: list[RunRow], column: int, reverse: bool) -> list[RunRow]:
    return sorted(rows, key=COLUMNS[column][2], reverse=reverse)


SORT = Binding.Group("Sort")  # o and O show as one footer entry, "o O Sort"


class RunsScreen(Screen):
    HELP_TITLE = "the runs browser"
    HELP_HEADING = "Runs"
    HELP_ALWAYS = ("resume",)  # in `?` whatever the selected run
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("q", "app.quit", "Quit"),
        Binding("enter", "open", "Open", show=False),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("o", "sort", "Sort by the next column", group=SORT),
        Binding("O", "reverse", "Reverse the order", key_display="O", group=SORT),
        Binding("space", "mark", "Mark"),
        Binding("R", "resume", "Resume", key_display="R"),
        Binding("s", "sample", "Sample"),
        Binding("e", "evaluate", "Evaluate"),
    ]
    DEFAULT_CSS = """
    RunsScreen #filter { height: 3; }
    RunsScreen #runs-table { height: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[RunRow] = []
        self.holders: dict[Path, Holder | None] = {}
        saved = settings.load_view("runs")
        keys = [key for key, _, _ in COLUMNS]
        self.sort_column = keys.index(saved["sort"]) if saved.get("sort") in keys else 0
        self.reverse = bool(saved.get("reverse", False))
        self._saved_filter = str(saved.get("filter", ""))
        self.columns: list[str] = []  # the column keys the table shows now
        self._drawn: tuple | None = None  # what the table shows: a rescan that found no change redraws nothing

    def compose(self) -> ComposeResult:
        yield Static("", id="runs-title", classes="title-bar")
        yield Input(self._saved_filter,
                    placeholder="filter: words in name, model, dataset, state (/ edits, esc leaves)",
                    id="filter")
        yield OpenTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.rescan()
        self.set_interval(RESCAN_S, self.rescan)

    def on_resize(self) -> None:
        self._drawn = None
        self.redraw()

    def on_jobs_updated(self, message) -> None:
        self.redraw()  # a job's state and step come from the queue

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def rescan(self) -> list[RunRow]:
        live = [with_live_state(row) for row in scan_runs(self.app.runs_root)]
        self.app.call_from_thread(self.show_rows, [r for r, _ in live], {r.path: h for r, h in live})
        return [r for r, _ in live]

    def show_rows(self, rows: list[RunRow], holders: dict[Path, Holder | None] | None = None) -> None:
        self.rows = rows
        self.holders = holders or {}
        self.redraw()

    def job_of(self, path: Path):
        """The run's training job in the queue: its unfinished one, else its latest."""
        resolved = path.resolve()
        jobs = [j for j in self.app.jobs if j.kind == "train" and j.run_dir and Path(j.run_dir).resolve() == resolved]
        return self.app.active_job(path, "train") or (jobs[-1] if jobs else None)

    def live_rows(self) -> list[RunRow]:
        """The scanned rows, with the queue's state and step for runs that have a job."""
        out = []
        for r in self.rows:
            job = self.job_of(r.path)
            # The queue is the truth for its jobs; a finished job's run folder may still say
            # "paused" or "running" (a cancel, a dead owner), and then the job wins too.
            if job is not None and (job.state not in FINISHED or r.state in ("running", "paused", "queued")):
                r = dataclasses.replace(r, state=job.state, step=max(r.step, job.step or 0))
            out.append(r)
        return out

    def visible(self) -> list[RunRow]:
        text = self.query_one("#filter", Input).value
        rows = [r for r in self.live_rows() if matches(r, text)]
        if COLUMNS[self.sort_column][0] == "writer":
            return sorted(rows, key=lambda r: writer_text(self.holders.get(r.path)), reverse=self.reverse)
        return sorted_rows(rows, self.sort_column, self.reverse)

    def cells(self, r: RunRow) -> dict[str, object]:
        steps = f"{r.step}/{r.total}" if r.total else str(r.step)
        return {"name": r.name, "model": r.model, "dataset": r.dataset + ("" if r.binarize == "none" else f" ({r.binarize})"),
                "state": r.state, "steps": steps, "nll": format_number(r.best_val_nll), "bpd": format_number(r.bpd),
                "fid": format_number(r.fid), "writer": writer_text(self.holders.get(r.path))}

    def redraw(self) -> None:
        if not self.is_mounted:
            return
        text = self.query_one("#filter", Input).value
        jobs = tuple((j.id, j.state, j.step) for j in self.app.jobs)
        drawn = (self.rows, tuple(self.holders.items()), jobs, text, self.sort_column, self.reverse,
                 frozenset(self.app.marked_runs), self.size.width)
        if drawn == self._drawn:
            return
        self._drawn = drawn
        settings.save_view("runs", {"sort": COLUMNS[self.sort_column][0], "reverse": self.reverse, "filter": text})
        table = self.query_one(DataTable)
        keep = self.selected_path()
        rows = self.visible()
        cells = [self.cells(r) for r in rows]
        widths = {key: max([len(heading)] + [len(str(c[key])) for c in cells]) for key, heading, _ in COLUMNS}
        columns = fitting_columns(widths, self.size.width - 2)
        # Columns are laid out anew with the rows: a column kept across a clear keeps the width of
        # the rows it held before (names cut to "mad" when the first draw had no rows yet).
        table.clear(columns=True)
        table.add_column(" ", key="mark")
        for key, heading, _ in COLUMNS:
            if key in columns:
                table.add_column(heading, key=key, width=widths[key])  # its cells' width, not the auto width
        self.columns = columns
        for r, c in zip(rows, cells):
            mark = Text("●", style="bold yellow") if r.path in self.app.marked_runs else ""
            table.add_row(mark, *(c[k] for k in columns), key=str(r.path))
        paths = [r.path for r in rows]
        if keep in paths:
            table.move_cursor(row=paths.index(keep), animate=False)
        arrow = "↓" if self.reverse else "↑"
        self.query_one("#runs-title", Static).update(
            f"runs in {self.app.runs_dir} · {len(rows)} of {len(self.rows)} shown · "
            f"sorted by {COLUMNS[self.sort_column][1]} {arrow} · {len(self.app.marked_runs)} marked")
        self.refresh_bindings()  # R follows the selected run's state

    def selected_path(self) -> Path | None:
        table = self.query_one(DataTable)
        if table.row_count == 0 or table.cursor_row < 0:
            return None
        return Path(table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value)

    def selected(self) -> RunRow | None:
        path = self.selected_path()
        row = next((r for r in self.rows if r.path == path), None)
        if row is None:
            self.notify("no run selected", severity="warning")
        return row

    # -- the footer: R only for a run it resumes (at 80 columns it cut s and e) ---------------------
    def _resumable(self) -> bool:
        path = self.selected_path() if self.query(DataTable) else None  # not composed yet: none
        row = next((r for r in self.rows if r.path == path), None)
        return row is not None and not row.finished and self.app.active_job(row.path) is None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self._resumable() if action == "resume" else True

    def on_data_table_row_highlighted(self, event) -> None:
        self.refresh_bindings()

    def on_key(self, event) -> None:
        if event.key == "R" and not self.query_one("#filter", Input).has_focus and not self._resumable():
            event.stop()
            event.prevent_default()
            self.action_resume()  # says why there is nothing to resume

    def on_input_changed(self, event: Input.Changed) -> None:
        self.redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(DataTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    # -- actions ---------------------------------------------------------------------------------
    def action_back(self) -> None:
        if self.query_one("#filter", Input).has_focus:
            self.query_one(DataTable).focus()
        else:
            self.app.pop_screen()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_sort(self) -> None:
        self.sort_column = (self.sort_column + 1) % len(COLUMNS)
        self.redraw()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.redraw()

    def action_mark(self) -> None:
        row = self.selected()
        if row is not None:
            self.app.marked_runs ^= {row.path}
            self.redraw()

    def action_open(self) -> None:
        row = self.selected()
        if row is None:
            return
        from workbench.tui.screens.detail import DetailScreen

        job = self.job_of(row.path)  # its latest, finished or not
        self.app.push_screen(DetailScreen(row.path, job_id=job.id if job else None))

    def action_resume(self) -> None:
        row = self.selected()
        if row is None:
            return
        if row.finished:
            self.notify(f"{row.name} is {row.state}: nothing to resume", severity="warning")
            return
        active = self.app.active_job(row.path)
        if active is not None:
            self.notify(f"{row.name} is already job {active.id} ({active.state})", severity="warning")
            return
        _, holder = live_state(row.path)  # asked now: the table may be seconds old
        if holder is not None:
            self.notify(f"{row.name}: being {holder.purpose or 'written'} by {holder.describe()}; "
                        "wait for it or stop it first", severity="error")
            return
        self.app.submit_job(f"resume {row.name}", lambda: self.app.queue.submit_resume(str(row.path)),
                            f"{row.name} resumes as job {{id}}")

    def action_sample(self) -> None:
        row = self.selected()
        if row is None:
            return
        if not has_checkpoint(row.path):
            self.notify(f"{row.name} has no checkpoint: nothing to sample from", severity="warning")
            return
        from workbench.tui.screens.sampling import SamplingScreen

        self.app.push_screen(SamplingScreen(row.path, which="best"))  # "last" where there is no best.pt

    def action_evaluate(self) -> None:
        row = self.selected()
        if row is None:
            return
        if not has_checkpoint(row.path):
            self.notify(f"{row.name} has no checkpoint: nothing to evaluate", severity="warning")
            return
        self.app.evaluate_run(row.path, f"evaluation of {row.name} queued as {{id}}; see the FID/IS panel (f on the jobs screen)")
