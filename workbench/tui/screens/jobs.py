"""The home screen: the queue as a live table, and the keys that drive it."""
from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static

from workbench.jobs import FINISHED
from workbench.runindex import has_checkpoint
from workbench.tui.messages import JobsUpdated
from workbench.tui.screens.confirm import ConfirmScreen
from workbench.tui.widgets.curve_keys import CurveKeys
from workbench.tui.widgets.footer import KeyFooter
from workbench.tui.widgets.job_panes import JobPanes
from workbench.tui.widgets.job_table import JobTable


RESUMABLE = ("paused", "cancelled", "failed")
#: The actions on the selected job: the footer shows each only where it does something.
JOB_ACTIONS = ("cancel_job", "pause_job", "resume_job", "move", "evaluate", "sample", "mark", "remove_job")


def applicable(action: str, job, jobs: list) -> bool:
    """Whether ``action`` does something for the selected ``job`` (None: no job selected)."""
    if job is None:
        return False
    if action == "cancel_job":
        return job.state not in FINISHED
    if action == "pause_job":  # a paused job resumes with R
        return job.state not in FINISHED and job.state != "paused"
    if action == "resume_job":
        return job.state in RESUMABLE
    if action == "move":  # the order decides which job starts next: it matters for those not started
        return len(jobs) > 1 and job.state in ("queued", "waiting", "paused")
    if action == "remove_job":
        return job.state in FINISHED
    if action == "mark":
        return bool(job.run_dir)
    if action in ("evaluate", "sample"):
        return bool(job.run_dir) and (job.kind == "train" or action == "sample") and has_checkpoint(job.run_dir)
    return True
FOLLOW_S = 0.15  # the panes follow the table's cursor after it rests this long


MOVE = Binding.Group("Move")  # + and - show as one footer entry, "+ - Move"

class JobsScreen(CurveKeys, Screen):
    """Every key acts on the job selected when it was pressed, found by its id (rows may move
    under the cursor while a question is open); cancel and remove ask first."""

    HELP_TITLE = "the jobs screen"
    HELP_HEADING = "Jobs"
    HELP_ALWAYS = JOB_ACTIONS  # in `?` whatever the selected job
    BINDINGS = [
        Binding("q", "app.quit", "Quit"),
        Binding("n", "new_job", "New"),
        Binding("c", "cancel_job", "Cancel"),
        Binding("p", "pause_job", "Pause"),
        Binding("R", "resume_job", "Resume", key_display="R"),
        Binding("plus,equals_sign", "move(-1)", "Move up", key_display="+", group=MOVE),
        Binding("minus", "move(1)", "Move down", key_display="-", group=MOVE),
        Binding("enter", "details", "Open", show=False),  # the table's enter shows in the footer
        Binding("e", "evaluate", "Evaluate"),
        Binding("s", "sample", "Sample"),
        Binding("r", "runs", "Runs"),
        Binding("f", "fid", "FID/IS"),
        Binding("space", "mark", "Mark", show=False),
        Binding("delete,x", "remove_job", "Remove", show=False),
        Binding("z", "toggle_panes", "Table only", show=False),
        *CurveKeys.curve_bindings(show=False),  # the selected job's curve, below the table
    ]

    def compose(self) -> ComposeResult:
        yield Static("", id="jobs-title", classes="title-bar")
        yield JobTable(id="jobs")
        yield Static("", id="jobs-hint", classes="hint")
        yield JobPanes(monitor=getattr(self.app, "resource_monitor", None), id="panes")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._update_title()
        self.query_one(JobTable).focus()
        if self.app.jobs:
            self.on_jobs_updated(JobsUpdated(self.app.jobs, set()))

    def _update_title(self) -> None:
        app = self.app
        role = "owner: this app runs the jobs" if app.queue.owner else "attached to the process that runs the jobs"
        counts: dict[str, int] = {}
        for job in app.jobs:
            counts[job.state] = counts.get(job.state, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no jobs"
        # The counts first: at 80 columns the end of the line is cut, and they change, the rest does not.
        self.query_one("#jobs-title", Static).update(f"genwb · {summary} · {app.runs_dir} · {role}")
        hint = "" if app.jobs else "The queue is empty: press n to start a job from a preset, r to browse runs."
        selected = app.job(self.query_one(JobTable).selected_id)
        if selected is not None and selected.error:
            hint = f"{selected.id}: {selected.error}"
        self.query_one("#jobs-hint", Static).update(hint)
        self.query_one("#jobs-hint", Static).display = bool(hint)

    def on_data_table_row_selected(self, event) -> None:
        self.action_details()

    def on_data_table_row_highlighted(self, event) -> None:
        self._update_title()
        self._follow_selection()
        self._refresh_keys()

    def on_jobs_updated(self, message: JobsUpdated) -> None:
        self.query_one(JobTable).show(message.jobs, self.app.sparks, self.app.marked_runs)
        self._update_title()
        self._follow_selection()
        self._refresh_keys()

    # -- the footer: the keys that do something for the selected job ------------------------------
    def _selected_job(self):
        tables = list(self.query(JobTable))
        return self.app.job(tables[0].selected_id) if tables else None

    def _refresh_keys(self) -> None:
        """Refresh the footer when the keys that apply changed (not at every 4 Hz update)."""
        job = self._selected_job()
        keys = tuple(applicable(action, job, self.app.jobs) for action in JOB_ACTIONS)
        if keys != getattr(self, "_keys_shown", None):
            self._keys_shown = keys
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in JOB_ACTIONS:
            return applicable(action, self._selected_job(), self.app.jobs)
        return True

    def on_key(self, event) -> None:
        # A key hidden for the selected job still answers: its action says why it does nothing
        # ("j1 is running: only a paused, cancelled or failed job resumes").
        for binding in self.BINDINGS:
            name, _, rest = binding.action.partition("(")
            if name in JOB_ACTIONS and event.key in binding.key.split(","):
                if not applicable(name, self._selected_job(), self.app.jobs):
                    event.stop()
                    event.prevent_default()
                    args = [int(a) for a in rest.rstrip(")").split(",") if a.strip()]
                    getattr(self, f"action_{name}")(*args)
                return

    def _follow_selection(self) -> None:
        """The panes show the selected job (by id: rows may have moved), once the cursor rests for
        FOLLOW_S: holding j or k does not build a curve panel for every row passed."""
        timer = getattr(self, "_follow_timer", None)
        if timer is not None:
            timer.stop()
        self._follow_timer = self.set_timer(FOLLOW_S, self._show_selected)

    def _show_selected(self) -> None:
        self._follow_timer = None
        self.query_one(JobPanes).show_job(self.app.job(self.query_one(JobTable).selected_id))

    def action_toggle_panes(self) -> None:
        """z: the table alone, on the whole screen (and back)."""
        self.toggle_class("-table-only")

    # -- the selected job ------------------------------------------------------------------------
    def selected(self, need_run: bool = False, need_checkpoint: bool = False):
        job = self.app.job(self.query_one(JobTable).selected_id)
        if job is None:
            self.notify("no job selected: press n to start one", severity="warning")
            return None
        if need_run and not job.run_dir:
            self.notify(f"{job.id} has no run folder yet ({job.state})", severity="warning")
            return None
        if need_checkpoint and not has_checkpoint(job.run_dir):
            self.notify(f"{job.id} has no checkpoint yet; wait for its first one", severity="warning")
            return None
        return job

    def _command(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # a job that finished meanwhile, a UserError from the queue
            self.notify(f"{what}: {e}", severity="error")
        self.app.refresh_jobs(force=True)

    # -- actions ---------------------------------------------------------------------------------
    def action_new_job(self) -> None:
        from workbench.tui.screens.newjob import NewJobScreen

        self.app.push_screen(NewJobScreen())

    def _confirm(self, question: str, yes: str, then) -> None:
        """Ask ``question``; ``then()`` runs only on yes (y). n, escape and enter (the focused
        button) leave everything as it was."""
        self.app.push_screen(ConfirmScreen(question, yes=yes, no="Keep"), lambda ok: then() if ok else None)

    def action_cancel_job(self) -> None:
        job = self.selected()
        if job is None:
            return
        if job.state in FINISHED:
            self.notify(f"{job.id} is already {job.state}", severity="warning")
            return
        job_id = job.id  # fixed now: the answer acts on this job wherever its row has moved
        if job.kind == "eval":
            what = "The evaluation stops at its next batch; R starts it again."
        elif job.state == "running":
            what = "It stops at a checkpoint; R resumes it from there."
        else:
            what = f"It is {job.state} and will not start; R queues it again."
        self._confirm(f"Cancel {job_id} ({job.name or job.kind}, {job.state})? {what}", "Cancel the job",
                      lambda: self._command(f"cancel {job_id}", self.app.queue.cancel, job_id))

    def action_resume_job(self) -> None:
        """R: a paused, cancelled or failed job goes back into the queue, from its last checkpoint."""
        job = self.selected()
        if job is None:
            return
        if job.state not in RESUMABLE:
            self.notify(f"{job.id} is {job.state}: only a paused, cancelled or failed job resumes", severity="warning")
            return
        self._command(f"resume {job.id}", self.app.queue.resume, job.id)
        self.notify(f"{job.id} queued again; it carries on from its last checkpoint")

    def action_pause_job(self) -> None:
        job = self.selected()
        if job is None:
            return
        if job.state == "paused":
            self._command(f"resume {job.id}", self.app.queue.resume, job.id)
        elif job.state in FINISHED:
            self.notify(f"{job.id} is {job.state}: nothing to pause", severity="warning")
        else:
            self._command(f"pause {job.id}", self.app.queue.pause, job.id)

    def action_move(self, delta: int) -> None:
        job = self.selected()
        if job is None:
            return
        ids = [j.id for j in self.app.jobs]
        position = min(max(ids.index(job.id) + delta, 0), len(ids) - 1)
        if position == ids.index(job.id):
            self.notify(f"{job.id} is already {'first' if delta < 0 else 'last'} in the queue", severity="warning")
            return
        self._command(f"move {job.id}", self.app.queue.move, job.id, position)
        table = self.query_one(JobTable)
        self.call_after_refresh(lambda: table.move_cursor(row=position, animate=False))

    def action_mark(self) -> None:
        """Mark the job's run to overlay its curves in another run's detail (o there)."""
        job = self.selected(need_run=True)
        if job is not None:
            self.app.marked_runs ^= {Path(job.run_dir)}
            self.query_one(JobTable).show(self.app.jobs, self.app.sparks, self.app.marked_runs)

    def action_remove_job(self) -> None:
        job = self.selected()
        if job is None:
            return
        if job.state not in FINISHED:
            self.notify(f"{job.id} is {job.state}: cancel it (c) before removing it", severity="warning")
            return
        job_id = job.id
        self._confirm(f"Remove {job_id} ({job.name or job.kind}, {job.state}) from the list? Its run folder stays.",
                      "Remove", lambda: self._command(f"remove {job_id}", self.app.queue.remove, job_id))

    def action_details(self) -> None:
        job = self.selected(need_run=True)
        if job is None:
            return
        from workbench.tui.screens.detail import DetailScreen

        self.app.push_screen(DetailScreen(Path(job.run_dir), job_id=job.id))

    def action_evaluate(self) -> None:
        job = self.selected(need_run=True, need_checkpoint=True)
        if job is None:
            return
        if job.kind != "train":
            self.notify(f"{job.id} is an evaluation; select a training job", severity="warning")
            return
        self.app.evaluate_run(Path(job.run_dir), f"evaluation of {Path(job.run_dir).name} queued as {{id}}")

    def action_sample(self) -> None:
        job = self.selected(need_run=True, need_checkpoint=True)
        if job is None:
            return
        from workbench.tui.screens.sampling import SamplingScreen

        # A finished job's best weights ("last" where there is no best.pt), else its latest.
        self.app.push_screen(SamplingScreen(Path(job.run_dir), which="best" if job.state == "done" else "last"))

    def action_runs(self) -> None:
        from workbench.tui.screens.runs import RunsScreen

        self.app.push_screen(RunsScreen())

    def action_fid(self) -> None:
        from workbench.tui.screens.evaluation import EvaluationScreen

        self.app.push_screen(EvaluationScreen())
