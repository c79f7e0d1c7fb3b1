"""The FID/IS panel: runs by sample-quality metric, read from each run's eval.json, with the
reference floor (real against real) and ceiling (noise) of each dataset beside them.

``e`` queues an evaluation of the marked runs (or the selected one) as queue jobs; their
progress shows in the job column and the row fills in when eval.json is rewritten.

Columns drop, when the terminal is too narrow for all of them, in the order of ``DROP_ORDER``
(empty columns first); the run, its model and the mark never drop."""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from workbench.reference import reference
from workbench.runindex import EVAL_METRICS, EvalRow, eval_rows, has_checkpoint
from workbench.tui.messages import JobsUpdated
from workbench.tui.screens.runs import OpenTable
from workbench.tui.widgets.footer import KeyFooter
from workbench.tui.widgets.job_table import format_number

RESCAN_S = 2.0
#: Narrow headings, 3 significant digits and a capped run column: every column fits in 120 terminal columns.
HEADINGS = {"precision": "prec", "recall": "rec", "conditional_accuracy": "acc", "test_bpd": "bpd"}
DIGITS = 3
RUN_WIDTH = 22
#: The columns a narrow terminal drops, first to last: the least read first, FID last.
DROP_ORDER = ["extractor", "recall", "precision", "kid_mean", "conditional_accuracy", "test_nll", "is_mean", "job",
              "test_bpd", "fid"]
#: (key, heading) of every column but the mark, left to right.
COLUMNS = [("run", "run"), ("model", "model"), ("extractor", "features"),
           *((key, HEADINGS.get(key, heading)) for key, heading in EVAL_METRICS), ("job", "job")]


NUMERIC = {key for key, _ in EVAL_METRICS}


def fitting_columns(widths: dict[str, int], room: int, empty: set[str]) -> list[str]:
    """The column keys to show in ``room`` cells: all of COLUMNS, less the empty ones and then
    those of DROP_ORDER, first to last, until the rest fit (each column takes 2 cells of padding)."""
    keys = [key for key, _ in COLUMNS]
    order = [k for k in DROP_ORDER if k in empty] + [k for k in DROP_ORDER if k not in empty]
    for key in order:
        if sum(widths[k] + 2 for k in keys) + 3 <= room:  # + the mark column
            break
        keys.remove(key)
    return keys
SAMPLE_COUNTS = (10000, 5000, 1000)


class EvaluationScreen(Screen):
    HELP_TITLE = "the FID/IS panel"
    HELP_HEADING = "FID/IS"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("space", "mark", "Mark"),
        Binding("e", "evaluate", "Evaluate marked"),
        Binding("n", "samples", "Samples n"),
        Binding("enter", "open", "Open run", show=False),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[EvalRow] = []
        self.n = SAMPLE_COUNTS[0]
        self.columns: list[str] = [key for key, _ in COLUMNS]  # the columns shown (a narrow terminal drops some)
        self._drawn: tuple | None = None  # what the table shows: a rescan that found no change redraws nothing

    def compose(self) -> ComposeResult:
        yield Static("", id="eval-title", classes="title-bar")
        yield OpenTable(id="eval-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="eval-note", classes="hint")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.rescan()
        self.set_interval(RESCAN_S, self.rescan)

    def on_resize(self) -> None:
        if self.is_mounted:
            self.redraw()

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def rescan(self) -> None:
        rows = eval_rows(self.app.runs_root)
        self.app.call_from_thread(self.show_rows, rows)

    def show_rows(self, rows: list[EvalRow]) -> None:
        self.rows = rows
        self.redraw()

    def on_jobs_updated(self, message: JobsUpdated) -> None:
        if any(j.kind == "eval" and j.id in message.changed for j in message.jobs):
            self.rescan()

    def _job_cell(self, path: Path) -> str:
        j = self.app.active_job(path, "eval")
        if j is not None:
            return f"{j.id} {j.progress:.0%}" if j.state == "running" else f"{j.id} {j.state}"
        path = path.resolve()
        failed = [j for j in self.app.jobs if j.kind == "eval" and j.state == "failed" and Path(j.run_dir).resolve() == path]
        return f"{failed[-1].id} failed" if failed else ""

    def redraw(self) -> None:
        jobs = [self._job_cell(r.path) for r in self.rows]
        drawn = (self.rows, jobs, self.n, frozenset(self.app.marked_runs), self.size.width)
        if drawn == self._drawn:
            return
        self._drawn = drawn
        table = self.query_one(DataTable)
        keep = table.cursor_row
        rows: list[tuple[str, object, dict]] = []  # (row key, mark, cells by column key)
        datasets, extractors = [], []
        for i, (r, job) in enumerate(zip(self.rows, jobs)):
            mark = Text("●", style="bold yellow") if r.path in self.app.marked_runs else ""
            cells = {"run": Text(r.name, no_wrap=True, overflow="ellipsis"), "model": r.model, "extractor": r.extractor or "—",
                     **{key: Text(format_number(r.values.get(key), DIGITS), justify="right") for key, _ in EVAL_METRICS},
                     "job": job}
            rows.append((f"{i}:{r.path}", mark, cells))
            if r.extractor_label and r.extractor_label not in extractors:
                extractors.append(r.extractor_label)
            if (r.dataset, r.binarize, r.levels, r.extractor or "classifier") not in datasets:
                datasets.append((r.dataset, r.binarize, r.levels, r.extractor or "classifier"))
        notes = []
        for dataset, binarize, levels, extractor in datasets:
            ref = reference(dataset, binarize, extractor=extractor, levels=levels)
            if ref is None:
                continue
            data = dataset + ("" if binarize == "none" else " bin.")
            for label, figures in (("floor", ref.floor), ("ceiling", ref.ceiling)):
                cells = {"run": Text(data, style="italic", no_wrap=True, overflow="ellipsis"),
                         "model": Text(label, style="italic"), "extractor": ref.extractor, "job": "",
                         **{key: Text(format_number(figures.get(key), DIGITS), style="italic", justify="right") if key in figures else ""
                            for key, _ in EVAL_METRICS}}
                rows.append((f"ref:{dataset}:{binarize}:{label}", "", cells))
            notes.append(f"{data} from {ref.source}")
        widths = {key: max([len(heading)] + [len(str(cells[key])) for _, _, cells in rows]) for key, heading in COLUMNS}
        widths["run"] = min(widths["run"], RUN_WIDTH)
        empty = {key for key, _ in COLUMNS if not any(str(cells[key]) for _, _, cells in rows)}
        columns = fitting_columns(widths, self.size.width - 2, empty)
        # Columns are laid out anew with the rows, each as wide as its cells (as in the runs browser).
        table.clear(columns=True)
        table.add_column(" ", key="mark")
        for key, heading in COLUMNS:
            if key in columns:
                # Figures line up on their last digit, headings over them.
                label = Text(heading, justify="right") if key in NUMERIC else heading
                table.add_column(label, key=key, width=widths[key])
        self.columns = columns
        for key, mark, cells in rows:
            table.add_row(mark, *(cells[k] for k in columns), key=key)
        if table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1), animate=False)
        self.query_one("#eval-title", Static).update(
            # What n and space change first: the runs folder, the longest part, may be cut.
            f"FID/IS · e evaluates with n = {self.n} · {len(self.app.marked_runs)} marked · "
            f"{len(self.rows)} run(s) under {self.app.runs_dir}")
        self.query_one("#eval-note", Static).update(
            "Lower is better for FID, KID, NLL, bits/dim; higher for IS, precision, recall, cond. acc.\n"
            f"Features: {'; '.join(extractors) or 'none yet'}.\n"
            "Reference rows (real test images against real training images = floor, against uniform noise "
            "= ceiling): " + ("; ".join(notes) if notes else "none measured for these datasets") + ".")

    def selected(self) -> EvalRow | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        if key.startswith("ref:"):
            return None
        return self.rows[int(key.split(":", 1)[0])]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    # -- actions ---------------------------------------------------------------------------------
    def action_mark(self) -> None:
        row = self.selected()
        if row is None:
            self.notify("select a run (reference rows cannot be marked)", severity="warning")
            return
        self.app.marked_runs ^= {row.path}
        self.redraw()

    def action_samples(self) -> None:
        self.n = SAMPLE_COUNTS[(SAMPLE_COUNTS.index(self.n) + 1) % len(SAMPLE_COUNTS)]
        self.redraw()

    def action_open(self) -> None:
        row = self.selected()
        if row is None:
            return
        from workbench.tui.screens.detail import DetailScreen

        self.app.push_screen(DetailScreen(row.path, tab="evaluation"))

    def action_evaluate(self) -> None:
        paths = sorted(p for p in self.app.marked_runs if (p / "config.toml").is_file())
        if not paths:
            row = self.selected()
            if row is None:
                self.notify("select or mark (space) the runs to evaluate", severity="warning")
                return
            paths = [row.path]
        queued = []
        for path in paths:
            if not has_checkpoint(path):
                self.notify(f"{path.name}: no checkpoint, skipped", severity="warning")
                continue
            job_id = self.app.evaluate_run(path, f"evaluation of {path.name} queued as {{id}} (n = {self.n})", n=self.n)
            if job_id:
                queued.append(job_id)
        if queued:
            self.redraw()
