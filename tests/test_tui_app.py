"""Pilot tests of the app: every key of the jobs screen, the new-job form, the detail screen,
the runs browser and the FID/IS panel; against a fixed queue, and against real JobQueues
(one in this process, one worked by another process)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, RichLog, Select, Static
from textual_plot import PlotWidget

from tests.tui_fakes import FixedQueue, classifier_eval, job_info, make_run, wait_for
from workbench.tui.app import create_app
from workbench.tui.screens.confirm import ConfirmScreen
from workbench.tui.screens.detail import DetailScreen
from workbench.tui.screens.evaluation import EvaluationScreen
from workbench.tui.screens.jobs import JobsScreen
from workbench.tui.screens import newjob
from workbench.tui.screens.newjob import NewJobScreen, find_presets, preset_fields
from workbench.tui.screens.runs import RunsScreen
from workbench.tui.widgets.curves import CurvesPanel
from workbench.tui.widgets.image_grid import ImageGrid
from workbench.tui.widgets.job_table import JobTable

pytestmark = pytest.mark.asyncio
SIZE = (120, 40)


def table_rows(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def open_table(pilot, key, screen_type, ready):
    """Press ``key`` (on the jobs screen): the ``screen_type`` it opens and its table, once ``ready(table)``."""
    await pilot.press(key)
    screen = pilot.app.screen
    assert isinstance(screen, screen_type)
    table = screen.query_one(DataTable)
    await wait_for(pilot, lambda: ready(table))
    return screen, table


def fixed_app(tmp_path, jobs=(), owner=True):
    queue = FixedQueue(jobs, owner=owner)
    return create_app(tmp_path / "runs", queue=queue, image_protocol="halfcell"), queue


# -- jobs screen, fixed queue -------------------------------------------------------------------------
async def test_jobs_table_shows_queue_with_sparkline(tmp_path):
    run = make_run(tmp_path / "runs", "tiny-a", state="running")
    jobs = [job_info("j1", "running", step=12, loss=510.25, images_per_s=4310.2, eta_s=75, run_dir=str(run)),
            job_info("j2", "waiting", after="j1")]
    app, queue = fixed_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)
        table = app.screen.query_one(JobTable)
        await wait_for(pilot, lambda: len(table_rows(table)[0][10]) > 4)  # read in a thread
        rows = table_rows(table)
        assert rows[0][:7] == ["j1", "tiny", "made", "fashion-mnist", "cpu", "running", "12/24"]
        assert rows[0][7:10] == ["510.2", "4,310", "1m15s"]
        assert set(rows[0][10]) <= set("▁▂▃▄▅▆▇█") and len(rows[0][10]) > 4  # falling loss
        assert rows[0][10][0] == "█" and rows[0][10][-1] == "▁"
        assert rows[1][5] == "waiting → j1"


async def test_cancel_pause_resume_and_move(tmp_path):
    jobs = [job_info("j1", "running", run_dir=None), job_info("j2", "queued"), job_info("j3", "queued")]
    app, queue = fixed_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.screen.query_one(JobTable)
        await pilot.press("p")
        assert queue.calls[-1] == ("pause", "j1")
        await pilot.pause(0.4)
        assert table_rows(table)[0][5] == "paused"
        await pilot.press("p")
        assert queue.calls[-1] == ("resume", "j1")
        await pilot.press("down", "c", "y")  # c asks first (tests/test_tui_home.py)
        assert queue.calls[-1] == ("cancel", "j2")
        await pilot.pause(0.4)
        assert table_rows(table)[1][5] == "cancelled"
        sent = len(queue.calls)
        await pilot.press("c")  # already cancelled: a notification, no command
        assert len(queue.calls) == sent
        await pilot.press("down", "plus")
        assert queue.calls[-1] == ("move", "j3", 1)
        await pilot.pause(0.4)
        assert [r[0] for r in table_rows(table)] == ["j1", "j3", "j2"]
        assert table.selected_id == "j3"
        await pilot.press("minus")
        assert queue.calls[-1] == ("move", "j3", 2)


async def test_failure_is_announced_and_its_error_shown(tmp_path):
    run = make_run(tmp_path / "runs", "tiny-a", state="running")
    app, queue = fixed_app(tmp_path, [job_info("j1", "running", run_dir=str(run))])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        queue.set("j1", state="failed", error="loss became NaN at step 7; lower train.lr")
        await wait_for(pilot, lambda: app.jobs[0].state == "failed")
        await pilot.pause()
        assert any("j1 (tiny) failed: loss became NaN" in n.message for n in app._notifications)
        assert "j1: loss became NaN" in str(app.screen.query_one("#jobs-hint", Static).render())
        await pilot.press("space")  # mark its run for overlays
        assert app.marked_runs == {run}
        assert table_rows(app.screen.query_one(JobTable))[0][0] == "j1 ●"


async def test_keys_at_the_wrong_time_notify(tmp_path):
    app, queue = fixed_app(tmp_path, [])
    async with app.run_test(size=SIZE) as pilot:
        for key in ("c", "p", "plus", "minus", "enter", "e", "s"):
            await pilot.press(key)
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)
        assert queue.calls == []
        assert any("no job selected" in n.message for n in app._notifications)
    app, queue = fixed_app(tmp_path, [job_info("j1", "queued")])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for key in ("enter", "e", "s"):  # no run folder yet
            await pilot.press(key)
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen) and queue.calls == []
        assert any("no run folder yet" in n.message for n in app._notifications)


async def test_evaluate_key_submits_eval_of_the_jobs_run_once(tmp_path, monkeypatch):
    """Once: a second press while that evaluation is queued warns instead. The runs folder is
    given relative (genwb's default, "runs"), the queue's jobs hold absolute run folders."""
    run = make_run(tmp_path / "runs", "tiny-a", checkpoint=True)
    monkeypatch.chdir(tmp_path)
    queue = FixedQueue([job_info("j1", "done", step=24, run_dir=str(run))])
    app = create_app("runs", queue=queue, image_protocol="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("e")
        assert queue.calls == [("submit_eval", str(run), 10000)]
        assert app.active_job(Path("runs") / "tiny-a", "eval").id == "j2"
        await pilot.press("e")
        await pilot.pause()
        assert queue.calls == [("submit_eval", str(run), 10000)]
        assert any("already job j2" in n.message for n in app._notifications)


async def test_sample_key_opens_the_sampling_session_on_the_jobs_checkpoint(tmp_path):
    from workbench.tui.screens.sampling import SamplingScreen

    run = make_run(tmp_path / "runs", "tiny-a", state="running", checkpoint=True)
    app, queue = fixed_app(tmp_path, [job_info("j1", "running", step=12, run_dir=str(run))])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("s")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SamplingScreen)
        assert (screen.run_dir, screen.which) == (run, "last")  # a running job: its last checkpoint
        # the fake checkpoint cannot load: the session says so instead of crashing the app
        await wait_for(pilot, lambda: screen.error is not None, timeout=60)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)


async def test_quit_asks_when_jobs_run_and_shuts_down_with_checkpoints(tmp_path):
    app, queue = fixed_app(tmp_path, [job_info("j1", "running")])
    app.owns_queue = True  # as if create_app had opened it
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen) and not queue.closed
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: queue.closed)
    assert ("shutdown", True, True) in queue.calls


async def test_hangup_leaves_like_a_confirmed_quit(tmp_path):
    """SIGHUP (the SSH session closed) and SIGTERM: running jobs checkpoint, the app exits."""
    import signal

    app, queue = fixed_app(tmp_path, [job_info("j1", "running")])
    app.owns_queue = True
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert not queue.closed
        app._hung_up(signal.SIGHUP)
        assert queue.calls == [("shutdown", True, True)]  # before the test harness closes the app
    assert queue.calls == [("shutdown", True, True)]  # once


async def test_command_palette_lists_the_screen_keys(tmp_path):
    app, queue = fixed_app(tmp_path, [])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("New (n)", "Cancel (c)", "Pause (p)", "Move up (+)", "Runs (r)", "FID/IS (f)", "Evaluate (e)", "Sample (s)"):
            assert title in titles


# -- new-job form ---------------------------------------------------------------------------------------
async def test_presets_found_in_cwd_and_beside_runs(tmp_path, monkeypatch):  # async: the module is asyncio-marked
    (tmp_path / "presets" / "paper").mkdir(parents=True)
    (tmp_path / "presets" / "a.toml").write_text("[run]\n")
    (tmp_path / "presets" / "paper" / "b.toml").write_text("[run]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(newjob, "PROJECT", tmp_path / "project")
    assert [p.name for p in find_presets(tmp_path / "runs")] == ["a.toml", "b.toml"]
    (tmp_path / "project" / "presets").mkdir(parents=True)
    (tmp_path / "project" / "presets" / "c.toml").write_text("[run]\n")  # the checkout genwb runs from
    assert [p.name for p in find_presets(tmp_path / "runs")] == ["a.toml", "b.toml", "c.toml"]
    assert preset_fields('[run]\nname = "x"\n[model]\nhidden = [32, 16]\nlr = 0.5\n') == [
        ("run.name", '"x"'), ("model.hidden", "[32, 16]"), ("model.lr", "0.5")]


async def _fill_form(pilot, app, preset: Path):
    await pilot.press("n")
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, NewJobScreen)
    screen.choose(preset)
    await wait_for(pilot, lambda: len(screen.query("#fields Input")) > 0)
    return screen


async def test_new_job_form_validates_inline_then_submits_overrides(tiny_preset, tmp_path, monkeypatch):
    (tmp_path / "presets").mkdir()
    preset = tmp_path / "presets" / "tiny.toml"
    preset.write_text(tiny_preset.read_text())
    monkeypatch.chdir(tmp_path)
    app, queue = fixed_app(tmp_path, [job_info("j1", "running")])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await _fill_form(pilot, app, preset)
        steps = screen.query_one("#field-train--max_steps", Input)
        assert steps.value == "24"
        steps.value = "-3"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "minimum" in str(screen.query_one("#error", Static).render()))
        error = str(screen.query_one("#error", Static).render())
        assert "max_steps = -3 is below its minimum 0" in error and "\n" not in error.strip()
        assert queue.calls == [] and app.screen is screen
        steps.value = "8"
        screen.query_one("#after", Select).value = "j1"
        screen.query_one("#device", Select).value = "cpu"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewJobScreen))
        assert queue.calls == [("submit", str(preset), ("train.max_steps=8",), "j1", "cpu")]


async def test_new_job_form_adds_a_schema_key_the_preset_lacks(tiny_preset, tmp_path, monkeypatch):
    """Issue 17: the form could only edit the preset's own keys. Catches an add-key input that does
    not complete from the schema, drops the added key from the overrides, or accepts a misspelt key."""
    from workbench.config import parse_config

    (tmp_path / "presets").mkdir()
    preset = tmp_path / "presets" / "tiny.toml"
    preset.write_text(tiny_preset.read_text())
    assert "threads" not in preset.read_text()
    monkeypatch.chdir(tmp_path)
    app, queue = fixed_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await _fill_form(pilot, app, preset)
        add = screen.query_one("#add-key", Input)
        add.focus()
        await pilot.press(*"run.th")
        await wait_for(pilot, lambda: add._suggestion == "run.threads")  # completion from the schema
        await pilot.press("right")
        assert add.value == "run.threads"
        await wait_for(pilot, lambda: "model.hidden" in screen.known)  # the model's hyper-parameters too
        await pilot.press(*" = 1", "enter")
        await pilot.pause()
        assert screen.query_one("#field-run--threads", Input).value == "1" and add.value == ""
        add.value = "run.thread = 2"
        await pilot.press("enter")
        await pilot.pause()
        assert "unknown key 'run.thread' (did you mean run.threads?)" in str(screen.query_one("#error", Static).render())
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewJobScreen))
        assert queue.calls == [("submit", str(preset), ("run.threads=1",), None, None)]
        assert parse_config(preset.read_text(), str(preset), list(queue.calls[0][2])).run.threads == 1


async def test_new_job_form_keeps_edits_when_the_cursor_visits_another_preset(tiny_preset, tmp_path, monkeypatch):
    """The preset list loads the preset under its cursor, so arrowing past one threw away the edits
    made to the other. Catches a form that reloads a visited preset from its file."""
    (tmp_path / "presets").mkdir()
    first, second = tmp_path / "presets" / "a.toml", tmp_path / "presets" / "b.toml"
    first.write_text(tiny_preset.read_text())
    second.write_text(tiny_preset.read_text())
    monkeypatch.chdir(tmp_path)
    app, queue = fixed_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await _fill_form(pilot, app, first)
        screen.query_one("#field-train--max_steps", Input).value = "8"
        screen.choose(second)
        await wait_for(pilot, lambda: screen.preset == second and len(screen.query("#fields Input")) > 0)
        assert screen.query_one("#field-train--max_steps", Input).value == "24"
        screen.choose(first)
        await wait_for(pilot, lambda: screen.preset == first and len(screen.query("#fields Input")) > 0)
        assert screen.query_one("#field-train--max_steps", Input).value == "8"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewJobScreen))
        assert queue.calls == [("submit", str(first), ("train.max_steps=8",), None, None)]


async def test_new_job_form_lists_presets_by_relative_path_and_first_comment(tmp_path, monkeypatch):
    """Catches absolute paths in the preset list, a missing description, and a description taken
    from a line other than the first comment."""
    (tmp_path / "presets" / "paper").mkdir(parents=True)
    (tmp_path / "presets" / "made.toml").write_text("# MADE on binarised Fashion-MNIST.\n# second line\n[run]\n")
    (tmp_path / "presets" / "paper" / "nade_mnist.toml").write_text(
        "# NADE on binarised MNIST: 500 hidden units, fixed\n# (raster) order\n[run]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(newjob, "PROJECT", tmp_path / "project")
    app, _ = fixed_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        listing = app.screen.query_one("#preset", newjob.OptionList)
        prompts = [str(listing.get_option_at_index(i).prompt) for i in range(listing.option_count)]
        assert [p.split()[0] for p in prompts] == ["made.toml", "paper/nade_mnist.toml"]
        assert prompts[0].split(None, 1)[1] == "MADE on binarised Fashion-MNIST."
        assert prompts[1].split(None, 1)[1] == "NADE on binarised MNIST"  # cut where the sentence runs on
        assert not any(str(tmp_path) in p for p in prompts)


async def test_new_job_form_tab_lands_only_on_visible_fields(tiny_preset, tmp_path, monkeypatch):
    """Issue 17: the third Tab landed on an invisible container. Catches a focusable container or a
    hidden widget in the form's focus chain."""
    from textual.widgets import Button, OptionList

    (tmp_path / "presets").mkdir()
    preset = tmp_path / "presets" / "tiny.toml"
    preset.write_text(tiny_preset.read_text())
    monkeypatch.chdir(tmp_path)
    app, _ = fixed_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        screen = await _fill_form(pilot, app, preset)
        seen = []
        for _ in range(len(screen.query("Input")) + 6):
            await pilot.press("tab")
            await pilot.pause()
            w = app.focused
            assert isinstance(w, (Input, Button, OptionList, Select)), type(w).__name__
            x, y = w.region.x + w.region.width // 2, w.region.y + w.region.height // 2
            under, _ = app.screen.get_widget_at(x, y)
            assert w.region.area > 0 and (under is w or w in under.ancestors), (w, under)
            seen.append(w.id or w.name)
        assert {"device", "after", "add-key", "submit", "cancel", "preset"} <= set(seen)


async def test_new_job_form_error_is_one_clean_line(tmp_path, monkeypatch):
    """Issue 17 saw "made.toml: : num_masks must be an integer". Catches the empty field, the
    absolute path and the "[model]:" prefix coming back in the line the form shows."""
    (tmp_path / "presets").mkdir()
    preset = tmp_path / "presets" / "made.toml"
    preset.write_text((Path(__file__).resolve().parents[1] / "presets" / "made.toml").read_text())
    monkeypatch.chdir(tmp_path)
    app, queue = fixed_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await _fill_form(pilot, app, preset)
        screen.query_one("#field-model--num_masks", Input).value = '"x"'
        await pilot.press("ctrl+s")
        error = lambda: str(screen.query_one("#error", Static).render())  # noqa: E731
        await wait_for(pilot, lambda: "must be" in error())
        assert error() == 'made.toml: model.num_masks must be an integer, got "x"'
        assert queue.calls == []


async def test_submitted_tiny_job_reaches_done(tiny_preset, tmp_path, monkeypatch):
    """The real queue, owned by the app: a job from the form trains to the end."""
    (tmp_path / "presets").mkdir()
    preset = tmp_path / "presets" / "tiny.toml"
    preset.write_text(tiny_preset.read_text().replace("max_steps = 24", "max_steps = 6")
                      .replace("[eval]", "[eval]\ntest = false"))
    monkeypatch.chdir(tmp_path)
    app = create_app(tmp_path / "runs", image_protocol="halfcell", cpu_slots=1)
    assert app.queue.owner
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        form = await _fill_form(pilot, app, preset)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is not form or not form._submitting,
                       timeout=60)
        assert isinstance(app.screen, JobsScreen), form.query_one("#error", Static).render()
        table = app.screen.query_one(JobTable)
        await wait_for(pilot, lambda: table.row_count == 1 and table_rows(table)[0][5] == "done", timeout=120)
        row = table_rows(table)[0]
        assert row[6] == "6/6" and row[7] != ""
        job = app.jobs[0]
        await pilot.press("enter")
        await pilot.pause(0.5)
        assert isinstance(app.screen, DetailScreen) and app.screen.run_dir == Path(job.run_dir)
        await pilot.press("3")
        await pilot.pause(0.3)
        log = app.screen.query_one("#log-view", RichLog)
        assert any("finished at step 6" in line.text for line in log.lines)
    assert not app.queue.owner  # shut down on exit: the lease is released


async def test_pause_and_cancel_a_real_job(tiny_preset, tmp_path):
    from workbench.jobs import JobQueue

    slow = tiny_preset.read_text().replace("max_steps = 24", "max_steps = 100000").replace("log_every = 2", "log_every = 1")
    preset = tmp_path / "slow.toml"
    preset.write_text(slow)
    queue = JobQueue(tmp_path / "runs", cpu_slots=1)
    try:
        job_id = queue.submit(preset)
        app = create_app(tmp_path / "runs", queue=queue, image_protocol="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(JobTable)
            await wait_for(pilot, lambda: app.job(job_id) is not None and app.job(job_id).step > 0, timeout=120)
            await pilot.press("p")
            await wait_for(pilot, lambda: app.job(job_id).state == "paused", timeout=60)
            await pilot.press("p")
            await wait_for(pilot, lambda: app.job(job_id).state in ("queued", "running"), timeout=60)
            await pilot.press("c", "y")  # c asks first
            await wait_for(pilot, lambda: table_rows(table)[0][5] == "cancelled", timeout=60)
    finally:
        queue.shutdown()


@pytest.mark.slow
async def test_app_attached_to_another_process_sees_progress(tiny_preset, tmp_path):
    slow = tiny_preset.read_text().replace("max_steps = 24", "max_steps = 100000")
    preset = tmp_path / "slow.toml"
    preset.write_text(slow)
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    submitted = subprocess.run([sys.executable, "-m", "workbench.cli", "queue", "add", str(preset), "--runs", str(runs)],
                               capture_output=True, text=True, env=env, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    worker = subprocess.Popen([sys.executable, "-m", "workbench.cli", "queue", "work", "--runs", str(runs)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (runs / "queue.lock").exists() or not (runs / "queue.lock").read_text().strip():
            assert time.monotonic() < deadline and worker.poll() is None
            await asyncio.sleep(0.2)
        app = create_app(runs, image_protocol="halfcell")
        assert not app.queue.owner
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(JobTable)
            assert "attached" in str(app.screen.query_one("#jobs-title", Static).render())

            def progressed():
                rows = table_rows(table)
                return rows and rows[0][5] == "running" and int(rows[0][6].split("/")[0]) > 0

            await wait_for(pilot, progressed, timeout=120)
            first = int(table_rows(table)[0][6].split("/")[0])
            await wait_for(pilot, lambda: int(table_rows(table)[0][6].split("/")[0]) > first, timeout=60)
            await pilot.press("c", "y")  # a command to the owner process (c asks first)
            await wait_for(pilot, lambda: table_rows(table)[0][5] == "cancelled", timeout=60)
    finally:
        worker.terminate()
        worker.wait(timeout=60)


# -- detail screen --------------------------------------------------------------------------------------
async def test_detail_shows_curves_parts_codebook_samples_log_config(tmp_path):
    run = make_run(tmp_path / "runs", "vq-a", model="vqvae", parts=("recon", "commitment", "codebook", "perplexity",
                                                                   "codes_used"), recon=True)
    other = make_run(tmp_path / "runs", "vq-b", model="vqvae", loss0=600.0)
    app, queue = fixed_app(tmp_path, [job_info("j1", "done", step=24, run_dir=str(run))])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause(0.5)
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        panel = screen.query_one(CurvesPanel)
        loss, parts, codebook = (screen.query_one(f"#plot-{k}", PlotWidget) for k in ("loss", "parts", "codebook"))
        assert [x for x in loss._labels if x] == ["train loss", "val NLL"]  # the faint raw lines are unlabelled
        train, val = (loss._datasets[loss._labels.index(k)] for k in ("train loss", "val NLL"))
        assert list(train.x) == list(range(2, 25, 2))
        assert list(val.x) == [6, 12, 18, 24]
        assert parts.display and set(parts._labels) - {None} == {"recon", "commitment", "codebook"}
        assert codebook.display and set(codebook._labels) - {None} == {"perplexity", "codes_used"}
        await pilot.press("l")
        await pilot.pause(0.7)
        assert panel.log_scale
        train = loss._datasets[loss._labels.index("train loss")]
        assert train.y[0] == pytest.approx(__import__("math").log10(535.0))
        await pilot.press("o")  # nothing marked: says how
        await pilot.pause()
        assert not panel.overlay
        app.marked_runs.add(other)
        await pilot.press("o")
        await pilot.pause(0.7)
        assert panel.overlay and any("vq-b" in str(label) for label in loss._labels)
        await pilot.press("2")
        await pilot.pause(0.5)
        samples, recon = screen.query_one("#samples-image", ImageGrid), screen.query_one("#recon-image", ImageGrid)
        assert samples.picture is not None and samples.picture.size == (117, 117)
        assert recon.picture is not None
        assert "step-24.png" in str(screen.query_one("#samples-label").render())
        await pilot.press("3")
        await pilot.pause(0.3)
        lines = [line.text for line in screen.query_one("#log-view", RichLog).lines]
        assert lines[0].startswith("step 2: train loss 535")
        await pilot.press("4")
        await pilot.pause(0.3)
        assert 'name = "vqvae"' in screen.query_one("#config-view", Static).content.code
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)


async def test_detail_follows_a_growing_run(tmp_path):
    import json

    run = make_run(tmp_path / "runs", "live", steps=6, state="running")
    app, queue = fixed_app(tmp_path, [job_info("j1", "running", step=6, run_dir=str(run))])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause(0.3)
        loss = app.screen.query_one("#plot-loss", PlotWidget)
        assert len(loss._datasets[0].x) == 3
        with open(run / "metrics.jsonl", "a") as f:
            for step in (8, 10):
                f.write(json.dumps({"step": step, "split": "train", "loss": 500.0}) + "\n")
        from PIL import Image

        Image.new("L", (56, 56), 255).save(run / "samples" / "step-10.png")
        await pilot.pause(1.3)
        assert len(loss._datasets[0].x) == 5
        assert app.screen.query_one("#samples-image", ImageGrid).picture.size == (56, 56)


# -- runs browser ---------------------------------------------------------------------------------------
async def test_runs_browser_lists_sorts_filters_and_resumes(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "made-a", evaluation=classifier_eval(12.5, nll=470.0))
    make_run(runs, "vae-b", model="vae", state="interrupted", steps=12, checkpoint=True)
    make_run(runs, "made-c", loss0=520.0)
    (runs / "not-a-run").mkdir()
    app, queue = fixed_app(tmp_path, [])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen, table = await open_table(pilot, "r", RunsScreen, lambda t: t.row_count == 3)
        rows = table_rows(table)
        assert [r[1] for r in rows] == ["made-a", "made-c", "vae-b"]
        assert rows[0][2:] == ["made", "fashion-mnist (dynamic)", "finished", "24/24", "468", "0.8649", "12.5", ""]  # no writer
        assert rows[2][4:6] == ["interrupted", "12/24"]
        await pilot.press("o", "o", "o", "o", "o")  # run, model, dataset, state, steps, best val NLL
        assert "best val NLL" in str(screen.query_one("#runs-title", Static).render())
        assert [r[1] for r in table_rows(table)] == ["made-c", "made-a", "vae-b"]
        await pilot.press("O")
        assert [r[1] for r in table_rows(table)] == ["vae-b", "made-a", "made-c"]
        await pilot.press("slash")
        await pilot.press(*"vae")
        assert [r[1] for r in table_rows(table)] == ["vae-b"]
        await pilot.press("enter")  # leaves the filter
        await pilot.press("R")
        assert queue.calls == [("submit_resume", str(runs / "vae-b"))]
        await pilot.press("space")
        assert app.marked_runs == {runs / "vae-b"}
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, DetailScreen) and app.screen.run_dir == runs / "vae-b"


async def test_runs_browser_refuses_to_resume_a_finished_run(tmp_path):
    make_run(tmp_path / "runs", "made-a")
    app, queue = fixed_app(tmp_path, [])
    async with app.run_test(size=SIZE) as pilot:
        await open_table(pilot, "r", RunsScreen, lambda t: t.row_count == 1)
        await pilot.press("R", "s", "e")
        await pilot.pause()
        assert queue.calls == [] and isinstance(app.screen, RunsScreen)


# -- FID/IS panel ---------------------------------------------------------------------------------------
async def test_fid_panel_fills_from_eval_json_with_references(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "made-a", evaluation=classifier_eval(12.5, is_mean=4.5, nll=470.0), checkpoint=True)
    pending = make_run(runs, "made-b", checkpoint=True)
    app, queue = fixed_app(tmp_path, [])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen, table = await open_table(pilot, "f", EvaluationScreen, lambda t: t.row_count >= 2)
        rows = table_rows(table)
        assert rows[0][1:5] == ["made-a", "made", "classifier", "12.5"]
        assert rows[0][6] == "4.5" and rows[0][10] == "470"
        assert rows[1][1] == "made-b" and rows[1][4] == ""
        refs = [r for r in rows if r[2] in ("floor", "ceiling")]
        assert [r[1:3] for r in refs] == [["fashion-mnist bin.", "floor"], ["fashion-mnist bin.", "ceiling"]]
        from workbench.reference import reference
        from workbench.tui.screens.evaluation import DIGITS
        from workbench.tui.widgets.job_table import format_number

        figures = reference("fashion-mnist", "dynamic")
        assert (refs[0][4], refs[1][4]) == (format_number(figures.floor["fid"], DIGITS), format_number(figures.ceiling["fid"], DIGITS))
        assert "classifier (fashion-mnist, binary)" in str(screen.query_one("#eval-note", Static).render())
        await pilot.press("down", "space", "n", "e")
        assert queue.calls == [("submit_eval", str(pending), 5000)]
        assert "j1" in table_rows(table)[1][-1]
        (pending / "eval.json").write_text(__import__("json").dumps(classifier_eval(30.0)))
        await wait_for(pilot, lambda: table_rows(table)[1][4] == "30")
