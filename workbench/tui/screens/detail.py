"""A job's or a run's detail, in tabs: Curves (live, or replayed from metrics.jsonl), Samples
(the grid and reconstructions of a step as terminal images, never below 1:1; `[`/`]` step through
earlier steps, pgup/pgdn page through images that do not all fit, z shows one alone),
Log, Config (the resolved TOML) and Evaluation (eval.json). Everything is read from the run
folder, so a finished run, a job of this process and a job of another process look the same.

The run folder is read in a worker thread once a second (``DetailReader``): a metrics file that
grows without bound, or ends in a gigabyte line, costs the screen a bounded read off the UI thread
(``workbench.runindex.MetricsTail`` skips over-long lines)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from rich.syntax import Syntax
from rich.table import Table
from textual import work
from textual.actions import parse
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Label, RichLog, Static, TabbedContent, TabPane

from workbench.jobs import FINISHED
from workbench.runindex import (
    EVAL_METRICS,
    has_checkpoint,
    nll_kind,
    read_config,
    total_steps,
)
from workbench.runlive import LiveRun, RunLive
from workbench.tui.messages import JobsUpdated
from workbench.tui.steplog import NOTE, StepLog
from workbench.tui.widgets.curve_keys import CurveKeys
from workbench.tui.widgets.curves import CurvesPanel
from workbench.tui.widgets.footer import KeyFooter
from workbench.tui.widgets.image_grid import ImageGrid

STEP = Binding.Group("Step")  # footer entries: "[ ] Step", "pgup pgdn Page"
PAGE = Binding.Group("Page")
TABS = ["curves", "samples", "log", "config", "evaluation"]
#: Keys of one tab: the footer shows them there only (at 80 columns the curve keys cut [ ] and z
#: off the Samples tab's footer); pressed elsewhere they bring their tab (``on_key``).
TAB_OF = {"curves_log": "curves", "curves_smooth": "curves", "curves_zoom": "curves", "curves_cursor": "curves",
          "overlay": "curves", "step": "samples"}
LOG_LINES = 5000
PAGE_KEYS = "pgup/pgdn · z zoom"
_SAMPLE = re.compile(r"^(recon-)?step-(\d+)\.png$")


def sample_steps(run_dir: Path) -> tuple[dict[int, Path], dict[int, Path]]:
    """Every samples/step-N.png and samples/recon-step-N.png, by step."""
    grids: dict[int, Path] = {}
    recons: dict[int, Path] = {}
    try:
        entries = list((Path(run_dir) / "samples").iterdir())
    except OSError:
        entries = []
    for p in entries:
        m = _SAMPLE.match(p.name)
        if m:
            (recons if m.group(1) else grids)[int(m.group(2))] = p
    return grids, recons


@dataclass
class Snapshot:
    """What one read of the run folder found, handed from the reader thread to the screen."""
    live: LiveRun
    rows: list[dict] = field(default_factory=list)
    restarted: bool = False
    grids: dict[int, Path] = field(default_factory=dict)
    recons: dict[int, Path] = field(default_factory=dict)
    evaluation: dict | None = None  # None: eval.json unchanged since the last read
    complete: bool = True  # the read reached the end of metrics.jsonl (else more rows are to come)


class DetailReader:
    """Reads a run folder for the detail screen, in a worker thread: bounded, incremental."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.live = RunLive(self.run_dir)
        self._eval_stamp: object = ()

    def read(self, job=None) -> Snapshot:
        live = self.live.read(job)
        grids, recons = sample_steps(self.run_dir)
        path = self.run_dir / "eval.json"
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            stamp = None
        evaluation = None
        if stamp != self._eval_stamp:
            self._eval_stamp = stamp
            try:
                evaluation = json.loads(path.read_text()) if stamp else {}
            except (OSError, ValueError, RecursionError):
                evaluation = {}
            if not isinstance(evaluation, dict):
                evaluation = {}
        return Snapshot(live, self.live.rows, self.live.tail.restarted, grids, recons, evaluation,
                        complete=not self.live.tail.more)


def title_line(run_dir: Path, config: dict, live: LiveRun, total: int | None) -> str:
    """"made-a · made on fashion-mnist · running 170/300 · written by pid 4242@gpu-01"."""
    model = config.get("model", {}) if isinstance(config.get("model"), dict) else {}
    data = config.get("data", {}) if isinstance(config.get("data"), dict) else {}
    bits = [run_dir.name, f"{model.get('name', '?')} on {data.get('dataset', '?')}"]
    job = f"job {live.job_id} " if live.job_id else ""
    bits.append(f"{job}{live.state} {live.step}/{total or '?'}")
    if live.holder is not None:
        bits.append(f"written by {live.writer()}")
    if live.error:
        bits.append(f"error: {live.error}")
    return " · ".join(bits)


def metrics_line(row: dict) -> str:
    values = " ".join(f"{k} {v:.4g}" for k, v in row.items()
                      if k not in ("step", "split", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool))
    return f"step {row.get('step')}: {row.get('split', 'train')} {values}"


def evaluation_table(evaluation: dict) -> Table | str:
    records = {k: v for k, v in evaluation.items() if isinstance(v, dict) and "fid" in v}
    if not records and "test_nll" not in evaluation:
        return "Not evaluated yet: press e to queue an evaluation (FID, KID, IS, precision/recall)."
    table = Table("metric", *records.keys() or ["value"], title="eval.json")
    for key, heading in EVAL_METRICS:
        if key in ("test_nll", "test_bpd"):
            if key in evaluation:
                kind = f" ({nll_kind(evaluation)})" if key == "test_nll" else ""
                table.add_row(f"test {heading}{kind}", *[f"{evaluation[key]:.4f}"] * max(1, len(records)))
            continue
        cells = [f"{r[key]:.4f}" if isinstance(r.get(key), (int, float)) else "" for r in records.values()]
        if any(cells):
            label = next((r.get("labels", {}).get(key.split("_")[0]) for r in records.values()
                          if r.get("labels", {}).get(key.split("_")[0])), heading)
            table.add_row(label, *cells)
    table.caption = "; ".join(f"extractor: {r.get('extractor_label', r.get('extractor'))}, n = {r.get('n')}"
                              for r in records.values()) or None
    return table


class DetailScreen(CurveKeys, Screen):
    HELP_TITLE = "the run detail"
    HELP_HEADING = "Run"
    HELP_SECTIONS = {"step": "Samples", "page": "Samples", "zoom": "Samples", "tab": "Tabs"}
    HELP_ALWAYS = tuple(TAB_OF)  # in `?` whatever the open tab
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("q", "app.quit", "Quit"),
        Binding("s", "sample", "Sample"),
        Binding("e", "evaluate", "Evaluate"),
        Binding("o", "overlay", "Overlay marked"),
        *CurveKeys.curve_bindings(show=True),
        Binding("left_square_bracket", "step(-1)", "Earlier", key_display="[", group=STEP),
        Binding("right_square_bracket", "step(1)", "Later", key_display="]", group=STEP),
        Binding("pageup,comma", "page(-1)", "Page−", key_display="pgup", group=PAGE),
        Binding("pagedown,full_stop", "page(1)", "Page+", key_display="pgdn", group=PAGE),
        Binding("z", "zoom", "Zoom"),
        Binding("1", "tab('curves')", "Curves", show=False),
        Binding("2", "tab('samples')", "Samples", show=False),
        Binding("3", "tab('log')", "Log", show=False),
        Binding("4", "tab('config')", "Config", show=False),
        Binding("5", "tab('evaluation')", "Evaluation", show=False),
    ]
    DEFAULT_CSS = """
    DetailScreen TabbedContent { height: 1fr; }
    DetailScreen ContentSwitcher { height: 1fr; }
    DetailScreen TabPane { height: 1fr; padding: 0; }
    DetailScreen #sample-row { height: 1fr; }
    DetailScreen #sample-row > Vertical { width: 1fr; }
    DetailScreen #sample-row Label { width: 1fr; content-align: center middle; color: $text-muted; }
    """
    POLL_S = 1.0

    def __init__(self, run_dir: Path, job_id: str | None = None, tab: str = "curves") -> None:
        super().__init__()
        self.tab = tab if tab in TABS else "curves"
        self.run_dir = Path(run_dir)
        self.job_id = job_id
        self._shown: dict[str, tuple] = {}
        self._reader: DetailReader | None = None  # made in the worker: even its first read is off the UI thread
        self._reading = False  # a read is in flight: the next poll waits for it
        self.step_log = StepLog(LOG_LINES)  # the Log tab's lines in step order (see workbench/tui/steplog.py)
        self._read_seq = 0  # the newest event when the read in flight started
        self._config: dict | None = None
        self.live: LiveRun | None = None
        self.grids: dict[int, Path] = {}
        self.recons: dict[int, Path] = {}
        self.sample_step: int | None = None  # the step shown in Samples; None follows the newest

    def compose(self) -> ComposeResult:
        yield Static(self.run_dir.name, id="detail-title", classes="title-bar")
        with TabbedContent(initial=self.tab):
            with TabPane("Curves [1]", id="curves"):
                yield CurvesPanel(self.run_dir, sorted(self.app.marked_runs))
            with TabPane("Samples [2]", id="samples"):
                with Horizontal(id="sample-row"):
                    with Vertical():
                        yield Label("samples", id="samples-label")
                        yield ImageGrid(None, id="samples-image", keys=PAGE_KEYS)
                    with Vertical(id="recon-box"):
                        yield Label("reconstructions", id="recon-label")
                        yield ImageGrid(None, id="recon-image", keys=PAGE_KEYS)
            with TabPane("Log [3]", id="log"):
                yield RichLog(id="log-view", wrap=False, max_lines=LOG_LINES, auto_scroll=True)
            with TabPane("Config [4]", id="config"):
                with VerticalScroll():
                    yield Static(id="config-view")
            with TabPane("Evaluation [5]", id="evaluation"):
                with VerticalScroll():
                    yield Static(id="eval-view")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._config = read_config(self.run_dir)
        try:
            text = (self.run_dir / "config.toml").read_text()
            config = Syntax(text, "toml", line_numbers=True, theme="ansi_dark", background_color="default")
        except OSError as e:
            config = f"cannot read config.toml: {e.strerror}"
        self.query_one("#config-view", Static).update(config)
        self.query_one("#recon-box").display = False
        self.poll()
        self.set_interval(self.POLL_S, self.poll)

    def on_jobs_updated(self, message: JobsUpdated) -> None:
        if self.job_id in message.changed:
            if self.live is not None:  # the queue's state and step now; the folder's at the next read
                self._update_title(self.live)

    def poll(self) -> None:
        if not self._reading:
            self._reading = True
            self._read_seq = self.app.event_seq
            self._read(self.app.job(self.job_id))

    @work(thread=True, exit_on_error=False, group="detail-read")
    def _read(self, job) -> None:
        try:
            if self._reader is None:
                self._reader = DetailReader(self.run_dir)
            snapshot = self._reader.read(job)
        except Exception as e:  # noqa: BLE001 - a damaged folder must not end the screen
            self.app.call_from_thread(self._read_failed, e)
            return
        self.app.call_from_thread(self._show, snapshot)

    def _read_failed(self, error: Exception) -> None:
        self._reading = False
        self.query_one("#detail-title", Static).update(f"{self.run_dir.name} · cannot read the run: {error}")

    def _show(self, snap: Snapshot) -> None:
        self._reading = False
        if not self.is_attached:
            return
        self.live = snap.live
        self._update_title(snap.live)
        self._update_log(snap)
        if snap.evaluation is not None:
            self.query_one("#eval-view", Static).update(evaluation_table(snap.evaluation))
        self.grids, self.recons = snap.grids, snap.recons
        self._update_samples()

    def _update_title(self, live: LiveRun) -> None:
        job = self.app.job(self.job_id)
        if job is not None:  # the queue is the truth for its jobs
            live = LiveRun(job.state, max(live.step, job.step or 0), live.holder, job.error or live.error, job.id)
        total = job.total if job is not None and job.total else total_steps(self._config or {})
        self.query_one("#detail-title", Static).update(title_line(self.run_dir, self._config or {}, live, total))

    def _update_log(self, snap: Snapshot) -> None:
        """The metrics rows of this read and the events that arrived before it started, in step
        order. Events (start, samples, checkpoints, the end) reach this process when it runs the
        job; the metrics rows come from the run folder, for any run."""
        view = self.query_one("#log-view", RichLog)
        redraw = False
        if snap.restarted:
            self.step_log.clear()
            self.step_log.add(-1, "(resumed: rows after the checkpoint are logged again)", NOTE)
            redraw = True
        events = self.app.event_log.get(self.job_id, ()) if self.job_id else ()
        rows = [(row.get("step"), metrics_line(row)) for row in snap.rows]
        new = self.step_log.take(rows, events, self._read_seq if snap.complete else None)
        if new is None or redraw:
            view.clear()
            new = self.step_log.lines()
        for line in new[-LOG_LINES:]:
            view.write(line)

    def shown_step(self) -> int | None:
        """The step whose samples are on screen: the chosen one, else the newest."""
        if self.sample_step is not None and self.sample_step in self.grids:
            return self.sample_step
        return max(self.grids) if self.grids else None

    def _update_samples(self) -> None:
        step = self.shown_step()
        recon_step = step if step in self.recons else (max(self.recons) if self.recons and self.sample_step is None else None)
        self.query_one("#recon-box").display = bool(self.recons)
        steps = sorted(self.grids)
        where = f" ({steps.index(step) + 1} of {len(steps)}; [ ] earlier/later)" if step is not None and len(steps) > 1 else ""
        for key, path in (("samples", self.grids.get(step)), ("recon", self.recons.get(recon_step))):
            if path is None:
                continue
            try:
                stamp = (path, path.stat().st_mtime_ns)
            except OSError:
                continue
            if self._shown.get(key) != stamp:
                self._shown[key] = stamp
                # A reconstruction PNG is originals over reconstructions: the pairs stay together.
                self.query_one(f"#{key}-image", ImageGrid).update(path, band=2 if key == "recon" else 1)
                self.refresh_bindings()
            what = "samples" if key == "samples" else "reconstructions"
            self.query_one(f"#{key}-label", Label).update(f"{what}: {path.name}" + (where if key == "samples" else ""))

    # -- actions ---------------------------------------------------------------------------------
    def _sample_grids(self) -> list[ImageGrid]:
        """The Samples tab's image grids, when that tab is the one shown."""
        tabs = next(self.query(TabbedContent).results(), None)
        if tabs is None or tabs.active != "samples":
            return []
        return [g for g in self.query(ImageGrid).results(ImageGrid) if g.display and g.parent.display]

    def _active_tab(self) -> str | None:
        tabs = list(self.query(TabbedContent))
        return tabs[0].active if tabs else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in TAB_OF:
            return self._active_tab() == TAB_OF[action]
        if action == "page":
            return any(g.paged for g in self._sample_grids())
        if action == "zoom":
            return any(g.count >= 2 for g in self._sample_grids())
        return True

    def on_tabbed_content_tab_activated(self) -> None:
        self.refresh_bindings()

    def on_key(self, event) -> None:
        # A key of another tab (hidden in this one's footer) still works, and brings its tab.
        tab = self._active_tab()
        matches = [parse(b.action) for b in self.BINDINGS if event.key in b.key.split(",")]
        if not matches or any(name not in TAB_OF or TAB_OF[name] == tab for _, name, _ in matches):
            return  # a key of this tab (or of none): Textual's bindings run it
        _, name, args = matches[0]
        event.stop()
        event.prevent_default()
        self.action_tab(TAB_OF[name])
        getattr(self, f"action_{name}")(*args)

    def on_resize(self) -> None:
        self.call_after_refresh(self.refresh_bindings)  # the grids page or not at the new size

    def action_page(self, delta: int) -> None:
        """Page through the images of the Samples tab that do not all fit at 1x."""
        moved = [g.page(delta) for g in self._sample_grids() if g.paged]
        if not any(moved):
            self.notify("no more images that way", severity="warning")
        self.refresh_bindings()

    def action_zoom(self) -> None:
        """One image of each sample grid alone, as large as fits; z again: back to the grid."""
        for grid in self._sample_grids():
            grid.toggle_zoom()
        self.refresh_bindings()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_step(self, delta: int) -> None:
        """Step through the sample grids of earlier steps, as TensorBoard's image slider does."""
        steps = sorted(self.grids)
        if not steps:
            self.notify("no samples yet", severity="warning")
            return
        current = self.shown_step()
        i = max(0, min(len(steps) - 1, steps.index(current) + delta))
        self.sample_step = None if i == len(steps) - 1 else steps[i]  # at the newest: follow it again
        if self.query_one(TabbedContent).active != "samples":
            self.action_tab("samples")
        self._update_samples()

    def curves_shown(self) -> None:
        self.action_tab("curves")

    def action_overlay(self) -> None:
        panel = self.query_one(CurvesPanel)
        others = sorted(p for p in self.app.marked_runs if p != self.run_dir)
        if not panel.overlay and not others:
            self.notify("no runs to overlay: mark runs with space in the runs browser (r) or on the jobs screen",
                        severity="warning")
            return
        panel.set_overlay_dirs(others)
        panel.overlay = not panel.overlay

    def action_sample(self) -> None:
        if not has_checkpoint(self.run_dir):
            self.notify("no checkpoint yet: nothing to sample from", severity="warning")
            return
        from workbench.tui.screens.sampling import SamplingScreen

        job = self.app.job(self.job_id)
        running = job is not None and job.state not in FINISHED
        # The running job's latest weights; else the best, or "last" where there is no best.pt.
        self.app.push_screen(SamplingScreen(self.run_dir, which="last" if running else "best"))

    def action_evaluate(self) -> None:
        if not has_checkpoint(self.run_dir):
            self.notify("no checkpoint yet: nothing to evaluate", severity="warning")
            return
        self.app.evaluate_run(self.run_dir, "evaluation queued as {id}; the Evaluation tab fills in when it finishes")
