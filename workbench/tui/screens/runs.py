"""The runs browser: every run folder under the runs folder, sortable and filterable from the
keyboard; opens a run's detail, resumes an unfinished run as a job, marks runs to compare.

The folders are scanned (``workbench.runindex.scan_runs``) in a thread every few seconds, so a
large metrics file never stalls the screen."""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from workbench.runindex import RunRow, has_checkpoint, scan_runs
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
]


def matches(row: RunRow, text: str) -> bool:
    haystack = f"{row.name} {row.model} {row.dataset} {row.binarize} {row.state}".lower()
    return all(word in haystack for word in text.lower().split())


def sorted_rows(rows: list[RunRow], column: int, reverse: bool) -> list[RunRow]:
    return sorted(rows, key=COLUMNS[column][2], reverse=reverse)


class RunsScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("enter", "open", "Open", show=False),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("o", "sort", "Sort column"),
        Binding("O", "reverse", "Reverse sort", key_display="O"),
        Binding("space", "mark", "Mark"),
        Binding("R", "resume", "Resume as job", key_display="R"),
        Binding("s", "sample", "Sample"),
        Binding("e", "evaluate", "Evaluate"),
        Binding("q", "app.quit", "Quit", show=False),
    ]
    DEFAULT_CSS = """
    RunsScreen #filter { height: 3; }
    RunsScreen #runs-table { height: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[RunRow] = []
        self.sort_column = 0
        self.reverse = False
        self._drawn: tuple | None = None  # what the table shows: a rescan that found no change redraws nothing

    def compose(self) -> ComposeResult:
        yield Static("", id="runs-title", classes="title-bar")
        yield Input(placeholder="filter: words to match in name, model, dataset, state (/ to edit, esc to leave)",
                    id="filter")
        yield OpenTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column(" ", key="mark")
        for key, heading, _ in COLUMNS:
            table.add_column(heading, key=key)
        table.focus()
        self.rescan()
        self.set_interval(RESCAN_S, self.rescan)

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def rescan(self) -> list[RunRow]:
        rows = scan_runs(self.app.runs_root)
        self.app.call_from_thread(self.show_rows, rows)
        return rows

    def show_rows(self, rows: list[RunRow]) -> None:
        self.rows = rows
        self.redraw()

    def visible(self) -> list[RunRow]:
        text = self.query_one("#filter", Input).value
        return sorted_rows([r for r in self.rows if matches(r, text)], self.sort_column, self.reverse)

    def redraw(self) -> None:
        text = self.query_one("#filter", Input).value
        drawn = (self.rows, text, self.sort_column, self.reverse, frozenset(self.app.marked_runs))
        if drawn == self._drawn:
            return
        self._drawn = drawn
        table = self.query_one(DataTable)
        keep = self.selected_path()
        rows = self.visible()
        table.clear()
        for r in rows:
            steps = f"{r.step}/{r.total}" if r.total else str(r.step)
            mark = Text("●", style="bold yellow") if r.path in self.app.marked_runs else ""
            table.add_row(mark, r.name, r.model, r.dataset + ("" if r.binarize == "none" else f" ({r.binarize})"),
                          r.state, steps, format_number(r.best_val_nll), format_number(r.bpd),
                          format_number(r.fid), key=str(r.path))
        paths = [r.path for r in rows]
        if keep in paths:
            table.move_cursor(row=paths.index(keep), animate=False)
        arrow = "↓" if self.reverse else "↑"
        self.query_one("#runs-title", Static).update(
            f"runs in {self.app.runs_dir} · {len(rows)} of {len(self.rows)} shown · "
            f"sorted by {COLUMNS[self.sort_column][1]} {arrow} · {len(self.app.marked_runs)} marked")

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

        path = row.path.resolve()
        jobs = [j for j in self.app.jobs if j.kind == "train" and j.run_dir and Path(j.run_dir).resolve() == path]
        job = self.app.active_job(path, "train") or (jobs[-1] if jobs else None)  # its latest, finished or not
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
