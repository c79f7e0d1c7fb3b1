"""JobPanes: the lower half of the home screen, for the job selected in the table: its live
curve (widgets/curves.py), its latest samples at full size (widgets/image_grid.py), the tail
of its log, and the resource meters (widgets/meters.py).

Every file read (the samples folder, the metrics tail) happens in a thread worker twice a
second; the UI only takes the result over. The log keeps at most LOG_LINES lines, in step order
(workbench/tui/steplog.py: the metrics rows and the queue's events arrive out of step). The image
pane is mounted once its module (which imports torch, seconds on a busy machine) was imported
in a thread, so the home screen shows at once.
"""
from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from workbench.runindex import MetricsTail, latest_samples
from workbench.tui.steplog import StepLog
from workbench.tui.widgets.meters import MetersPanel

LOG_LINES = 200
POLL_S = 0.5
TAIL_BYTES = 64_000
NO_BROWSER_IMAGES = "images are not shown in the browser (open the run folder's samples/ instead)"


def metrics_line(row: dict) -> str:
    """"70: train loss 415.6": a part equal to the loss (an autoregressive model's nll) is left
    out, since in a 30-column pane it only pushes the next value out."""
    loss = row.get("loss")
    values = " ".join(f"{k} {v:.4g}" for k, v in row.items()
                      if k not in ("step", "split", "epoch", "time", "lr", "images_per_s") and isinstance(v, (int, float))
                      and not isinstance(v, bool) and not (k != "loss" and v == loss))
    return f"{row.get('step')}: {row.get('split', 'train')} {values}"


class LogTail(Static):
    """The log pane. The meters above it grow when their first samples arrive, so its height
    changes without the panes' own: it takes the tail that fits again after each resize."""

    def on_resize(self) -> None:
        panes = next((a for a in self.ancestors if isinstance(a, JobPanes)), None)
        if panes is not None:
            self.call_after_refresh(panes._draw_log)


class JobPanes(Vertical):
    DEFAULT_CSS = """
    JobPanes { height: 1fr; layout: horizontal; }
    JobPanes .pane { border: round $panel; border-title-color: $text-muted; }
    JobPanes #pane-curves { width: 3fr; height: 1fr; }
    JobPanes #panes-side { width: 2fr; height: 1fr; }
    JobPanes #pane-samples { height: 1fr; min-height: 6; }
    JobPanes #pane-meters { height: auto; }
    JobPanes #pane-log { height: 1fr; min-height: 4; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    JobPanes #pane-empty { color: $text-muted; padding: 1 2; }
    JobPanes.-narrow #pane-samples { display: none; }
    JobPanes.-short #pane-log { display: none; }
    """

    def __init__(self, monitor=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run_dir: Path | None = None
        self.job_id: str | None = None
        self._monitor = monitor
        self._tail: MetricsTail | None = None
        self.step_log = StepLog(LOG_LINES)
        self.sample_path: Path | None = None
        self._grid = None  # the ImageGrid, once its module is imported
        self._reading = False  # a read in flight: the next poll waits for it (they share the tail)

    def compose(self) -> ComposeResult:
        yield Vertical(Static("select a job to see its curve", id="pane-empty"), id="pane-curves", classes="pane")
        with Vertical(id="panes-side"):
            yield Vertical(Static("no samples yet", id="samples-note"), id="pane-samples", classes="pane")
            yield MetersPanel(self._monitor, id="pane-meters", classes="pane")
            yield LogTail("", id="pane-log", classes="pane")

    def on_mount(self) -> None:
        self.query_one("#pane-curves").border_title = "curve"
        self.query_one("#pane-samples").border_title = "samples"
        self.query_one("#pane-log").border_title = "log"
        self.query_one("#pane-meters").border_title = "resources"
        if self._web_without_graphics():
            self.query_one("#samples-note", Static).update(NO_BROWSER_IMAGES)
        else:
            self._load_image_module()
        self.set_interval(POLL_S, self._poll)
        self.on_resize()

    def on_resize(self) -> None:
        # At 80 columns the samples would be shrunk below 1:1 in 30 cells: the curve and the
        # meters matter more there (the detail screen, enter, shows the samples).
        self.set_class(self.size.width < 90, "-narrow")
        self.set_class(self.size.height < 12 and self.size.width >= 90, "-short")
        self.call_after_refresh(self._draw_log)  # the tail that fits the log's new height

    def _web_without_graphics(self) -> bool:
        """In a browser (textual-serve) half-cell images are text and show; Kitty or Sixel cannot."""
        from workbench.tui import settings

        return bool(getattr(self.app, "is_web", False)) and settings.image_protocol() != "halfcell"

    @work(thread=True, exit_on_error=False, group="panes-import")
    def _load_image_module(self) -> None:
        import workbench.tui.widgets.image_grid  # noqa: F401  (torch: seconds, off the UI thread)

        self.app.call_from_thread(self._mount_grid)

    def _mount_grid(self) -> None:
        from workbench.tui.widgets.image_grid import ImageGrid

        if not self.is_mounted:
            return
        self._grid = ImageGrid(id="samples-grid", too_small="too small for one sample at 1:1 · ⏎ Open shows them")
        self.query_one("#pane-samples").mount(self._grid)
        self._grid.update(self.sample_path)
        self.query_one("#samples-note", Static).display = self.sample_path is None

    def on_image_grid_note_changed(self, event) -> None:
        """At the home's sizes a grid often has room for its images but not for the line under
        them: the note ("images 1-1 of 16") goes into the pane's border then."""
        event.stop()
        self.query_one("#pane-samples").border_subtitle = None if event.shown_below else event.note

    # -- the selected job ------------------------------------------------------------------------
    def show_job(self, job) -> None:
        """Follow ``job`` (a JobInfo, or None): a new curve panel and log when its run changes."""
        run_dir = Path(job.run_dir) if job is not None and job.run_dir else None
        self.job_id = job.id if job is not None else None
        if run_dir == self.run_dir:
            return
        self.run_dir = run_dir
        self.step_log.clear()
        self._tail = None
        self.sample_path = None
        curves = self.query_one("#pane-curves")
        curves.remove_children()
        if run_dir is None:
            note = "select a job to see its curve" if job is None else f"{job.id} has no run folder yet ({job.state})"
            curves.mount(Static(note, id="pane-empty"))
        else:
            from workbench.tui.widgets.curves import CurvesPanel

            curves.mount(CurvesPanel(run_dir))
            curves.border_title = f"curve · {run_dir.name}"
        self._show_samples(None)
        self._draw_log()
        self._poll()

    def _poll(self) -> None:
        if self.run_dir is not None:
            if not self._reading:
                self._reading = True
                # The events that arrived so far go in with the rows this read finds (see steplog.py).
                self._read(self.run_dir, self._tail, self.app.event_seq)
        elif self.job_id is not None:  # no run folder yet: the events alone
            self._take_log([], self.app.event_seq)

    @work(thread=True, exit_on_error=False, group="panes-read", exclusive=True)
    def _read(self, run_dir: Path, tail: MetricsTail | None, upto_seq: int) -> None:
        """The newest sample grid and the metrics rows logged since the last call."""
        try:
            if tail is None:
                tail = MetricsTail(run_dir / "metrics.jsonl")
                tail.skip_to_tail(TAIL_BYTES)
            rows = tail.read_new()
            samples, _recon = latest_samples(run_dir)
        except Exception:
            self._reading = False
            raise
        self.app.call_from_thread(self._take, run_dir, tail, rows, samples, upto_seq)

    def _take(self, run_dir: Path, tail: MetricsTail, rows: list[dict], samples: Path | None, upto_seq: int) -> None:
        self._reading = False
        if run_dir != self.run_dir:
            return  # the selection moved on while this was read
        self._tail = tail
        if tail.restarted:  # a resume rewrote the metrics file: its rows come again
            self.step_log.clear()
        if samples != self.sample_path:
            self._show_samples(samples)
        self._take_log(rows, upto_seq)

    @property
    def log_lines(self) -> list[str]:
        return self.step_log.lines()

    def _take_log(self, rows: list[dict], upto_seq: int) -> None:
        """The metrics rows read and the app's event lines (checkpoints, samples, failures) of
        this job up to ``upto_seq``, into the log in step order."""
        events = self.app.event_log.get(self.job_id, ()) if self.job_id else ()
        before = len(self.step_log), self.step_log.event_seq
        # "15200: samples step-15200.png", as the rows read: "step " only pushed the file name out.
        events = [(seq, step, line.removeprefix("step ")) for seq, step, line in events]
        self.step_log.take([(row.get("step"), metrics_line(row)) for row in rows], events, upto_seq)
        if rows or (len(self.step_log), self.step_log.event_seq) != before:
            self._draw_log()

    def _show_samples(self, path: Path | None) -> None:
        self.sample_path = path
        pane = self.query_one("#pane-samples")
        pane.border_title = f"samples · {path.name}" if path else "samples"
        if self._grid is not None:
            self._grid.update(path)
            self.query_one("#samples-note", Static).display = path is None
        elif not self._web_without_graphics():
            self.query_one("#samples-note", Static).update("no samples yet" if path is None else "loading…")

    def _draw_log(self) -> None:
        log = self.query_one("#pane-log", Static)
        height = max(1, log.content_size.height)
        lines = self.step_log.lines()[-height:]
        log.update("\n".join(lines) if lines else ("no log yet" if self.run_dir else ""))
