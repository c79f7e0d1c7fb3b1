"""Pilot tests of the home (jobs) screen and the app shell: destructive keys ask, keys act on the
job selected at the press whatever the rows do meanwhile, R resumes, ? lists the keys of every
screen, and the footer keeps quit/back at 80 columns."""
from __future__ import annotations

import pytest

from tests.tui_fakes import FixedQueue, job_info, make_run
from workbench.tui.app import create_app
from workbench.tui.screens.confirm import ConfirmScreen
from workbench.tui.screens.help import HelpScreen
from workbench.tui.screens.jobs import JobsScreen
from workbench.tui.widgets.footer import KeyFooter
from workbench.tui.widgets.job_table import JobTable

pytestmark = pytest.mark.asyncio


def fixed_app(tmp_path, jobs=(), owner=True):
    queue = FixedQueue(jobs, owner=owner)
    return create_app(tmp_path / "runs", queue=queue, image_protocol="halfcell"), queue


def state(queue, job_id):
    return queue.job(job_id).state


async def test_cancel_asks_and_no_leaves_the_job_running(tmp_path):
    """Bug caught: `c` cancelling at once (the accident of issue 17), or `n`/escape/enter cancelling."""
    app, queue = fixed_app(tmp_path, [job_info("j1", "running"), job_info("j2", "queued")])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        for no in ("n", "escape", "enter"):  # enter presses the focused button, which is "Keep"
            await pilot.press("c")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            assert "j1" in app.screen.question and "checkpoint" in app.screen.question
            await pilot.press(no)
            await pilot.pause()
            assert isinstance(app.screen, JobsScreen)
            assert state(queue, "j1") == "running" and queue.calls == []
        await pilot.press("c", "y")
        await pilot.pause()
        assert queue.calls == [("cancel", "j1")]


async def test_action_applies_to_the_job_selected_at_the_press_while_rows_reorder(tmp_path):
    """Bug caught: acting on the row index (a late reorder made `p` pause another job), or the
    cursor staying on the row instead of following the job."""
    jobs = [job_info(f"j{i}", "running" if i < 3 else "queued") for i in range(1, 5)]
    app, queue = fixed_app(tmp_path, jobs)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(JobTable)
        await pilot.press("down")
        assert table.selected_id == "j2"
        await pilot.press("c")  # the question is open ...
        await pilot.pause()
        queue.move("j2", 3)  # ... while the worker reorders the queue twice
        queue.move("j4", 0)
        app.refresh_jobs(force=True)
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert ("cancel", "j2") in queue.calls and state(queue, "j1") == "running"
        # The cursor followed j2 to its new row; the next key acts on it again.
        queue.move("j2", 0)
        app.refresh_jobs(force=True)
        await pilot.pause()
        assert table.selected_id == "j2" and table.cursor_row == 0
        await pilot.press("R")
        assert queue.calls[-1] == ("resume", "j2")


async def test_R_resumes_cancelled_failed_and_paused_jobs_only(tmp_path):
    """Bug caught: no resume from the jobs screen, or R re-queueing a running or done job."""
    jobs = [job_info("j1", "cancelled"), job_info("j2", "failed", error="nan"), job_info("j3", "paused"),
            job_info("j4", "running"), job_info("j5", "done")]
    app, queue = fixed_app(tmp_path, jobs)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        for _ in range(5):
            await pilot.press("R")
            await pilot.pause()
            await pilot.press("j")
        assert queue.calls == [("resume", "j1"), ("resume", "j2"), ("resume", "j3")]


async def test_remove_asks_and_refuses_a_live_job(tmp_path):
    """Bug caught: `x` removing a job without a question, or removing a running one."""
    app, queue = fixed_app(tmp_path, [job_info("j1", "running"), job_info("j2", "done")])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen) and queue.calls == []
        await pilot.press("j", "x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert queue.calls == []
        await pilot.press("x", "y")
        await pilot.pause()
        assert queue.calls == [("remove", "j2")]


async def test_question_mark_lists_the_keys_of_the_screen_below(tmp_path):
    """Bug caught: no `?`, a help screen listing the app's keys only, or one that does not close."""
    run = make_run(tmp_path / "runs", "tiny-a", state="running")
    app, queue = fixed_app(tmp_path, [job_info("j1", "running", run_dir=str(run))])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        rows = {(key, r[1]) for r in app.screen.keys for key in r[0].split()}
        assert {("c", "Cancel"), ("R", "Resume"), ("q", "Quit")} <= rows, rows
        assert ("j", "Down") in rows, rows
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)
        await pilot.press("r")  # the runs browser: ? shows its keys, not the jobs screen's
        await pilot.pause()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        descriptions = {r[1] for r in app.screen.keys}
        assert "Back" in descriptions and "Cancel" not in descriptions
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_footer_keeps_quit_and_keys_at_80_columns(tmp_path):
    """Bug caught: the footer cutting `q Quit` at 80 columns (seen at 100x30 in issue 17)."""
    app, queue = fixed_app(tmp_path, [job_info("j1", "running")])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        footer = app.screen.query_one(KeyFooter)
        keys = [k for k in footer.children if k.region.width]
        visible = [k.key for k in keys if k.region.right <= 80]
        assert visible[:2] == ["q", "question_mark"]


async def test_footer_shows_every_home_key_at_100_columns(tmp_path):
    """Bug caught (tmux walk, 100x30): the footer cutting `r Runs` and `f FID/IS`, the keys that
    lead to the other screens, because each key took its roomy padding and + and - two entries."""
    run = make_run(tmp_path / "runs", "tiny-a", state="paused", checkpoint=True)
    app, queue = fixed_app(tmp_path, [job_info("j1", "queued", run_dir=str(run)), job_info("j2", "running")])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        footer = app.screen.query_one(KeyFooter)
        keys = [k for k in footer.children if k.region.width]
        visible = {k.key for k in keys if k.region.right <= 100}
        assert {"r", "f", "s", "e", "n", "c"} <= visible
        move = [k for k in keys if k.key == "plus"]
        assert move and move[0].key_display == "+ -" and move[0].description == "Move"


async def test_footer_shows_only_the_keys_that_fit_the_selected_job(tmp_path):
    """Bug caught (tmux walk, 80x24): the footer offered R for a running job and c/p/R/e/s with
    no job at all, and so cut `s Sample`, `r Runs` and `f FID/IS` at 80 columns. A hidden key
    pressed still says why it does nothing; `?` still lists it."""
    run = make_run(tmp_path / "runs", "tiny-a", state="running", checkpoint=True)
    app, queue = fixed_app(tmp_path, [job_info("j1", "running", run_dir=str(run)), job_info("j2", "done")])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()

        def shown():
            footer = app.screen.query_one(KeyFooter)
            return {k.key for k in footer.children if k.region.width and k.region.right <= 80}

        assert {"c", "p", "e", "s", "r", "f"} <= shown() and "R" not in shown()
        await pilot.press("R")
        await pilot.pause()
        assert queue.calls == [] and any("only a paused" in n.message for n in app._notifications)
        await pilot.press("j")  # the finished job: nothing to cancel, pause or evaluate
        await pilot.pause(0.3)
        assert not {"c", "p", "e", "s", "R"} & shown() and {"r", "f"} <= shown()
        await pilot.press("question_mark")
        await pilot.pause()
        assert {"c", "p", "R"} <= {key for keys, _, _ in app.screen.keys for key in keys.split()}
    app, queue = fixed_app(tmp_path, [])
    async with app.run_test(size=(80, 24)) as pilot:  # no job: only the keys that need none
        await pilot.pause()
        footer = app.screen.query_one(KeyFooter)
        assert not {"c", "p", "R", "plus", "e", "s"} & {k.key for k in footer.children}


async def test_title_shows_the_job_counts_at_80_columns(tmp_path):
    """Bug caught (tmux walk at 80x24): the counts came after the runs folder and the owner's
    words, so the line ended "1 running, 1" and the queued job went unsaid."""
    queue = FixedQueue([job_info("j1", "running"), job_info("j2", "queued")])
    app = create_app(tmp_path / "a-long-folder-name" / "runs", queue=queue, image_protocol="halfcell")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        title = app.screen.query_one("#jobs-title")
        assert "1 running, 1 queued" in str(title.render())[:title.content_size.width]


async def test_quit_question_says_what_happens_to_training_and_evaluation(tmp_path):
    """Bug caught (issue 16): the question saying every running job "stops at a checkpoint",
    which an evaluation does not do."""
    jobs = [job_info("j1", "running"), job_info("j2", "running", kind="eval", name="eval")]
    app, queue = fixed_app(tmp_path, jobs)
    app.owns_queue = True
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        question = app.screen.question
        assert "Training (j1) stops at a checkpoint" in question
        assert "Evaluation (j2) is cancelled at its next batch" in question and "R" in question
        await pilot.press("y")
        for _ in range(100):
            if queue.closed:
                break
            await pilot.pause(0.05)
    assert ("shutdown", True, True) in queue.calls


async def test_samples_pane_says_how_many_images_it_shows_when_the_grid_has_no_row_for_it(tmp_path):
    """With four jobs at 160x45 the home's samples pane (14 rows, 28 half-cell pixels) holds one
    row of 28x28 tiles at 1:1 and no row for the note under it. Catches a pane that shows one image of 16 without
    saying so."""
    import time

    run = make_run(tmp_path / "runs", "made-a", state="running")
    jobs = [job_info("j1", "running", run_dir=str(run))] + [job_info(f"j{i}") for i in (2, 3, 4)]
    app, _ = fixed_app(tmp_path, jobs)
    async with app.run_test(size=(160, 45)) as pilot:
        pane = app.screen.query_one("#pane-samples")

        def said():  # the note in the grid's own row, or else in the pane's border
            grids = app.screen.query("#samples-grid")
            if not grids or grids.first().note is None:
                return False
            grid = grids.first()
            below = grid.query_one(".note").display
            return pane.border_subtitle == (None if below else grid.note)

        deadline = time.monotonic() + 60
        while not said():
            assert time.monotonic() < deadline, "the samples pane never said what it shows"
            await pilot.pause(0.05)
        grid = app.screen.query_one("#samples-grid")
        assert len(grid.shown_indices) < 16 and "of 16" in grid.note


async def test_samples_pane_too_short_for_one_tile_says_so_instead_of_a_crop(tmp_path):
    """At 100x30 with four jobs the home's samples pane is a few rows high: a 28x28 sample at 1:1
    does not fit. Catches a pane that shows a cropped sliver of it (with a cut note)."""
    import time

    run = make_run(tmp_path / "runs", "made-a", state="running")
    jobs = [job_info("j1", "running", run_dir=str(run))] + [job_info(f"j{i}") for i in (2, 3, 4)]
    app, _ = fixed_app(tmp_path, jobs)
    async with app.run_test(size=(100, 30)) as pilot:
        deadline = time.monotonic() + 60
        while not app.screen.query("#samples-grid") or app.screen.query_one("#samples-grid").note is None:
            assert time.monotonic() < deadline, "the samples grid never laid out"
            await pilot.pause(0.05)
        grid = app.screen.query_one("#samples-grid")
        assert grid.shown is None and grid.scale == 0 and "Open shows them" in grid.note
