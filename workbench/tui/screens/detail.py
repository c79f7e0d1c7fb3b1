"""A job's or a run's detail, in tabs: Curves (live, or replayed from metrics.jsonl), Samples
(the latest grid and reconstructions as terminal images), Log, Config (the resolved TOML) and
Evaluation (eval.json). Everything is read from the run folder, so a finished run, a job of
this process and a job of another process look the same."""
from __future__ import annotations

import json
from pathlib import Path

from rich.syntax import Syntax
from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, RichLog, Static, TabbedContent, TabPane

from workbench.jobs import FINISHED
from workbench.runindex import EVAL_METRICS, MetricsTail, has_checkpoint, latest_samples, nll_kind, read_config, read_status
from workbench.tui.messages import TAIL_BYTES, JobsUpdated
from workbench.tui.widgets.curves import CurvesPanel
from workbench.tui.widgets.image_grid import ImageGrid

TABS = ["curves", "samples", "log", "config", "evaluation"]


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


class DetailScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("l", "log_scale", "Log scale"),
        Binding("o", "overlay", "Overlay marked"),
        Binding("s", "sample", "Sample"),
        Binding("e", "evaluate", "Evaluate"),
        Binding("1", "tab('curves')", "Curves", show=False),
        Binding("2", "tab('samples')", "Samples", show=False),
        Binding("3", "tab('log')", "Log", show=False),
        Binding("4", "tab('config')", "Config", show=False),
        Binding("5", "tab('evaluation')", "Evaluation", show=False),
        Binding("q", "app.quit", "Quit", show=False),
    ]
    DEFAULT_CSS = """
    DetailScreen TabbedContent { height: 1fr; }
    DetailScreen ContentSwitcher { height: 1fr; }
    DetailScreen TabPane { height: 1fr; padding: 0; }
    DetailScreen #sample-row { height: 1fr; }
    DetailScreen #sample-row > Vertical { width: 1fr; }
    DetailScreen #sample-row Label { width: 1fr; content-align: center middle; color: $text-muted; }
    """

    def __init__(self, run_dir: Path, job_id: str | None = None, tab: str = "curves") -> None:
        super().__init__()
        self.tab = tab if tab in TABS else "curves"
        self.run_dir = Path(run_dir)
        self.job_id = job_id
        self._shown: dict[str, tuple] = {}
        self._log_tail = MetricsTail(self.run_dir / "metrics.jsonl")
        self._log_tail.skip_to_tail(TAIL_BYTES)
        self._log_seq = 0
        self._eval_stamp = None
        self._config: dict | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-title", classes="title-bar")
        with TabbedContent(initial=self.tab):
            with TabPane("Curves [1]", id="curves"):
                yield CurvesPanel(self.run_dir, sorted(self.app.marked_runs))
            with TabPane("Samples [2]", id="samples"):
                with Horizontal(id="sample-row"):
                    with Vertical():
                        yield Label("samples", id="samples-label")
                        yield ImageGrid(None, id="samples-image")
                    with Vertical(id="recon-box"):
                        yield Label("reconstructions", id="recon-label")
                        yield ImageGrid(None, id="recon-image")
            with TabPane("Log [3]", id="log"):
                yield RichLog(id="log-view", wrap=False, max_lines=5000, auto_scroll=True)
            with TabPane("Config [4]", id="config"):
                with VerticalScroll():
                    yield Static(id="config-view")
            with TabPane("Evaluation [5]", id="evaluation"):
                with VerticalScroll():
                    yield Static(id="eval-view")
        yield Footer()

    def on_mount(self) -> None:
        self._config = read_config(self.run_dir)
        try:
            text = (self.run_dir / "config.toml").read_text()
            config = Syntax(text, "toml", line_numbers=True, theme="ansi_dark", background_color="default")
        except OSError as e:
            config = f"cannot read config.toml: {e.strerror}"
        self.query_one("#config-view", Static).update(config)
        self.poll()
        self.set_interval(1.0, self.poll)

    def on_jobs_updated(self, message: JobsUpdated) -> None:
        if self.job_id in message.changed:
            self._update_title()
            self._update_log()

    def _update_title(self) -> None:
        """From the job, else status.json: never the metrics file, which a long run makes large."""
        job = self.app.job(self.job_id)
        config = self._config or {}
        bits = [self.run_dir.name, f"{config.get('model', {}).get('name', '?')} on {config.get('data', {}).get('dataset', '?')}"]
        status = {}
        if job is not None:
            bits.append(f"job {job.id} {job.state} {job.step}/{job.total or '?'}")
        else:
            status = read_status(self.run_dir)
            bits.append(f"{status.get('state', 'unknown')} at step {status.get('step', 0)}")
        error = job.error if job is not None else status.get("error")
        if error:
            bits.append(f"error: {error}")
        self.query_one("#detail-title", Static).update(" · ".join(bits))

    def poll(self) -> None:
        self._update_title()
        self._update_samples()
        self._update_log()
        self._update_eval()

    def _update_samples(self) -> None:
        samples, recon = latest_samples(self.run_dir)
        self.query_one("#recon-box").display = recon is not None
        for key, path in (("samples", samples), ("recon", recon)):
            if path is None:
                continue
            try:
                stamp = (path, path.stat().st_mtime_ns)
            except OSError:
                continue
            if self._shown.get(key) != stamp:
                self._shown[key] = stamp
                self.query_one(f"#{key}-image", ImageGrid).update(path)
                what = "samples" if key == "samples" else "reconstructions"
                self.query_one(f"#{key}-label", Label).update(f"{what}: {path.name}")

    def _update_log(self) -> None:
        log = self.query_one("#log-view", RichLog)
        # Events (start, samples, checkpoints, the end) reach this process when it runs the job;
        # the metrics rows come from the run folder, for any run.
        for seq, line in self.app.event_log.get(self.job_id, ()) if self.job_id else ():
            if seq > self._log_seq:
                log.write(line)
                self._log_seq = seq
        rows = self._log_tail.read_new()
        if self._log_tail.restarted:
            log.clear()
            log.write("(resumed: rows after the checkpoint are logged again)")
        for row in rows:
            log.write(metrics_line(row))

    def _update_eval(self) -> None:
        path = self.run_dir / "eval.json"
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            stamp = None
        if stamp == self._eval_stamp and stamp is not None:
            return
        self._eval_stamp = stamp
        try:
            evaluation = json.loads(path.read_text()) if stamp else {}
        except (OSError, ValueError):
            evaluation = {}
        self.query_one("#eval-view", Static).update(evaluation_table(evaluation))

    # -- actions ---------------------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_log_scale(self) -> None:
        panel = self.query_one(CurvesPanel)
        panel.log_scale = not panel.log_scale

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
