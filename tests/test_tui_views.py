"""Pilot tests of the views (detail, runs browser) against hostile and live run folders: a metrics
file ending in a huge unterminated line, a run written by another process, a run whose status.json
lags behind its metrics, sort and filter kept across openings and in the user's config file."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from tests.tui_fakes import FixedQueue, count_reads, job_info, make_run, wait_for
from workbench.tui import settings
from workbench.tui.app import create_app
from workbench.tui.screens.detail import DetailScreen
from workbench.tui.screens.runs import RunsScreen

SIZE = (120, 40)


def rows_of(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


@pytest.fixture
def holder_process(tmp_path):
    """Starts a process that holds a run's writer lease, as `genwb run` does; ends it after."""
    procs = []

    def hold(run: Path) -> subprocess.Popen:
        code = ("import sys; from workbench.lease import Lease; l = Lease(sys.argv[1], 'writer.lock', 'trained', "
                "'genwb run'); assert l.take(); print('held', flush=True); sys.stdin.read()")
        proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env={**__import__("os").environ, "PYTHONPATH": str(Path.cwd())})
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=10)


@pytest.mark.asyncio
async def test_runs_browser_shows_the_writer_and_refuses_R_on_a_held_run(tmp_path, holder_process):
    """Issue 16: `R` on a run another process trains queued a second trainer. Catches a browser
    that resumes a held run, or refuses it without naming the holder."""
    runs = tmp_path / "runs"
    held = make_run(runs, "made-held", state="running", steps=12, checkpoint=True)
    proc = holder_process(held)
    queue = FixedQueue([])
    app = create_app(runs, queue=queue, image_protocol="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        row = rows_of(table)[0]
        assert row[4] == "running" and row[-1].startswith(f"pid {proc.pid}")
        await pilot.press("R")
        await pilot.pause()
        assert queue.calls == []
        notes = [n.message for n in app._notifications]
        assert any(f"pid {proc.pid}" in m and "made-held" in m for m in notes), notes
    proc.stdin.close()
    proc.wait(timeout=10)


@pytest.mark.asyncio
async def test_runs_browser_shows_live_step_and_state(tmp_path):
    """A run whose status.json says "running" at step 0 but whose process is gone, with metrics at
    step 170, shows "interrupted" at 170; a run whose job the queue cancelled shows "cancelled".
    Catches the stale "0/300" and "paused" of issue 17."""
    runs = tmp_path / "runs"
    dead = make_run(runs, "made-dead", state="running", steps=12)
    (dead / "status.json").write_text(json.dumps({"state": "running", "step": 0}))
    with open(dead / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 170, "split": "train", "loss": 1.0}) + "\n")
    cancelled = make_run(runs, "made-job", state="paused", steps=12)
    queue = FixedQueue([job_info("j1", "cancelled", step=14, run_dir=str(cancelled))])
    app = create_app(runs, queue=queue, image_protocol="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        rows = {r[1]: r for r in rows_of(table)}
        assert rows["made-dead"][4:6] == ["interrupted", "170/24"]
        assert rows["made-job"][4:6] == ["cancelled", "14/24"]


@pytest.mark.asyncio
async def test_sort_and_filter_persist_for_the_session_and_in_the_config_file(tmp_path):
    """Catches a browser whose sort and filter reset each time it opens (issue 17)."""
    runs = tmp_path / "runs"
    make_run(runs, "made-a")
    make_run(runs, "vae-b", model="vae")
    app = create_app(runs, queue=FixedQueue([]), image_protocol="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        await pilot.press("o", "O", "slash", *"made", "enter", "escape")
        await pilot.pause()
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, RunsScreen) and screen.query_one("#filter", Input).value == "made"
        assert screen.sort_column == 1 and screen.reverse
    saved = settings.read_config()["tui"]["runs"]
    assert saved == {"sort": "model", "reverse": True, "filter": "made"}
    settings.forget_session_views()  # a new session reads the file
    assert RunsScreen().sort_column == 1


@pytest.mark.asyncio
async def test_detail_on_a_huge_unterminated_metrics_line_reads_bounded_off_the_ui_thread(tmp_path, monkeypatch):
    """Hostile case 18: metrics.jsonl ends in a 64 MiB line without a newline (sparse). The detail
    screen shows the rows before it, stays responsive, and its polls read almost nothing after the
    first load. Catches a screen that re-reads the pending line on every poll."""
    import workbench.runindex as runindex

    run = make_run(tmp_path / "runs", "made-huge", state="running", steps=12)
    with open(run / "metrics.jsonl", "r+b") as f:
        f.seek(0, 2)
        f.write(b'{"step": 14, "loss": "')
        f.seek(64 << 20, 1)
        f.write(b"x")
    reads = count_reads(monkeypatch, runindex)
    app = create_app(tmp_path / "runs", queue=FixedQueue([]), image_protocol="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(DetailScreen(run))
        await pilot.pause()
        screen = app.screen
        await wait_for(pilot, lambda: "12/24" in str(screen.query_one("#detail-title", Static).render()))
        await wait_for(pilot, lambda: "loss 510" in str(screen.query_one("#curves-status", Static).render()))
        before = len(reads)
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # two polls of the screen, five of the curves
            await pilot.press("3")
            await pilot.press("1")
        assert sum(n for n, _ in reads[before:]) < 1 << 20
    assert {main for _, main in reads} == {False}  # every read of the metrics file in a worker thread


@pytest.mark.asyncio
async def test_brackets_step_through_the_samples_of_earlier_steps(tmp_path):
    """`[` shows the grid of the previous logged step, `]` the next, and at the newest the view
    follows new grids again. Catches a Samples tab that only ever shows the newest PNG."""
    from PIL import Image

    run = make_run(tmp_path / "runs", "made-a", state="running", steps=12)
    for step, size in ((4, 28), (8, 56)):
        Image.new("L", (size, size), 255).save(run / "samples" / f"step-{step}.png")
    app = create_app(tmp_path / "runs", queue=FixedQueue([]), image_protocol="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(DetailScreen(run, tab="samples"))
        await pilot.pause()
        screen = app.screen
        await wait_for(pilot, lambda: screen.shown_step() == 12)
        label = lambda: str(screen.query_one("#samples-label").render())  # noqa: E731
        await pilot.press("left_square_bracket")
        assert screen.shown_step() == 8 and "step-8.png" in label() and "2 of 3" in label()
        await pilot.press("left_square_bracket", "left_square_bracket")  # stops at the first
        assert screen.shown_step() == 4
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert screen.sample_step is None and screen.shown_step() == 12
        Image.new("L", (28, 28), 0).save(run / "samples" / "step-16.png")
        await wait_for(pilot, lambda: screen.shown_step() == 16)  # following the newest again


def test_new_job_errors_are_one_clean_line():
    """Issue 17 saw "made.toml: : num_masks must be an integer". Catches an absolute path, an
    empty field or a "[model]:" section prefix left in the form's error line."""
    from workbench.tui.screens.newjob import clean_error

    preset = "/home/u/genwb/presets/made.toml"
    assert clean_error(f'{preset}: [model]: num_masks must be an integer, got "x"\nmore', preset) == \
        'made.toml: model.num_masks must be an integer, got "x"'
    assert clean_error(f"{preset}: : num_masks must be an integer", preset) == "made.toml: num_masks must be an integer"


@pytest.mark.asyncio
async def test_codebook_term_equal_to_commitment_is_named_and_counters_leave_the_loss_parts(tmp_path):
    """A VQ-VAE logs codebook == commitment (beta 1) and a "restarted" counter. Catches the codebook
    line hidden under the commitment line, and the counter plotted among the loss parts."""
    from textual_plot import PlotWidget

    run = make_run(tmp_path / "runs", "vq", model="vqvae", parts=("recon", "commitment", "perplexity", "restarted"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for row in rows:
        if "commitment" in row:
            row["codebook"] = row["commitment"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    app = create_app(tmp_path / "runs", queue=FixedQueue([]), image_protocol="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(DetailScreen(run))
        await pilot.pause()
        screen = app.screen
        parts = screen.query_one("#plot-parts", PlotWidget)
        await wait_for(pilot, lambda: len(parts._labels) > 0)
        assert sorted(map(str, filter(None, parts._labels))) == ["commitment = codebook", "recon"]
        codebook = screen.query_one("#plot-codebook", PlotWidget)
        assert sorted(map(str, filter(None, codebook._labels))) == ["perplexity", "restarted"]


def test_class_names_of_the_known_datasets():
    """Catches names off by one (Fashion-MNIST's 0 is the T-shirt) and a crash on unknown datasets."""
    from workbench.classnames import class_name, labelled

    assert class_name("fashion-mnist", 0) == "T-shirt/top" and class_name("fashion-mnist", 9) == "Ankle boot"
    assert class_name("CIFAR-10", 3) == "cat" and labelled("cifar10", 0) == "0 airplane"
    assert labelled("mnist", 7) == "7" and labelled("mystery", 4) == "4" and class_name("fashion-mnist", 12) == "12"


def test_fid_panel_drops_columns_in_order_never_the_run_or_model():
    """Catches a narrow FID/IS panel that cuts columns off the right (FID, bits/dim and job were cut
    at 100x30), drops the run or its model, or drops a filled column before an empty one."""
    from workbench.tui.screens.evaluation import COLUMNS, DROP_ORDER, fitting_columns

    widths = {key: 8 for key, _ in COLUMNS}
    everything = [key for key, _ in COLUMNS]
    full = sum(w + 2 for w in widths.values()) + 3
    assert fitting_columns(widths, full, set()) == everything
    assert fitting_columns(widths, full - 1, {"job"}) == [k for k in everything if k != "job"]  # the empty one first
    assert fitting_columns(widths, full - 1, set()) == [k for k in everything if k != DROP_ORDER[0]]
    shown = [fitting_columns(widths, room, set()) for room in range(full, 0, -1)]
    for keys in shown:
        assert keys[:2] == ["run", "model"]
        dropped = [k for k in everything if k not in keys]
        assert set(dropped) == set(DROP_ORDER[:len(dropped)])
    assert shown[-1] == ["run", "model"]


@pytest.mark.asyncio
async def test_fid_panel_title_shows_n_at_80_columns(tmp_path):
    """Bug caught (tmux walk at 80x24): the title ended in "e evaluates with n = " cut off after
    the runs folder, so pressing n changed a number nobody could see."""
    from workbench.tui.screens.evaluation import SAMPLE_COUNTS, EvaluationScreen

    runs = tmp_path / "a-runs-folder-with-a-long-name" / "runs"
    make_run(runs, "made-20261205-123918")
    app = create_app(runs, queue=FixedQueue([]), image_protocol="halfcell")
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(EvaluationScreen())
        await pilot.pause(0.5)
        title = app.screen.query_one("#eval-title", Static)

        def visible():
            return str(title.render())[:title.content_size.width]

        await wait_for(pilot, lambda: f"n = {SAMPLE_COUNTS[0]}" in visible())
        await pilot.press("n")
        await wait_for(pilot, lambda: f"n = {SAMPLE_COUNTS[1]}" in visible())


@pytest.mark.asyncio
async def test_runs_browser_footer_keeps_sample_and_evaluate_at_80_columns(tmp_path):
    """Bug caught (tmux walk at 80x24): the footer offered R for finished runs and o, O as two
    entries, and so cut `s Sample` and `e Evaluate`. R shows for a run it resumes; pressed on a
    finished one it still says why."""
    from workbench.tui.widgets.footer import KeyFooter

    make_run(tmp_path / "runs", "made-a")
    make_run(tmp_path / "runs", "made-b", state="interrupted")
    app = create_app(tmp_path / "runs", queue=FixedQueue([]), image_protocol="halfcell")
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(RunsScreen())
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        await pilot.press("g")
        await pilot.pause(0.2)

        def shown():
            return {k.key for k in app.screen.query_one(KeyFooter).children if k.region.width and k.region.right <= 80}

        assert app.screen.selected_path().name == "made-a" and {"s", "e", "o"} <= shown() and "R" not in shown()
        await pilot.press("R")
        await wait_for(pilot, lambda: any("nothing to resume" in n.message for n in app._notifications))
        await pilot.press("question_mark")
        await pilot.pause()
        assert ("R", "Resume") in {(keys, description) for keys, description, _ in app.screen.keys}  # ? lists it
        await pilot.press("escape", "j")
        await wait_for(pilot, lambda: "R" in shown())  # made-b was interrupted: R resumes it


@pytest.mark.asyncio
async def test_detail_footer_shows_the_keys_of_the_open_tab(tmp_path):
    """Bug caught (tmux walk at 80x24): on the Samples tab the footer showed the curve keys and
    cut `[ ] Step` and `z Zoom`. Each tab's keys show on it; a key of another tab, pressed,
    brings its tab and works."""
    from workbench.tui.widgets.footer import KeyFooter

    run = make_run(tmp_path / "runs", "made-a")
    (run / "samples" / "step-12.png").write_bytes((run / "samples" / "step-24.png").read_bytes())
    app = create_app(tmp_path / "runs", queue=FixedQueue([]), image_protocol="halfcell")
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(DetailScreen(run))
        await pilot.pause(0.5)
        screen = app.screen

        def shown():
            return {k.key for k in screen.query_one(KeyFooter).children if k.region.width and k.region.right <= 80}

        await wait_for(pilot, lambda: {"l", "m"} <= shown())
        assert "left_square_bracket" not in shown()
        await pilot.press("2")
        await wait_for(pilot, lambda: "left_square_bracket" in shown() and "z" in shown())
        assert not {"l", "m"} & shown()
        await pilot.press("l")  # a curve key on the Samples tab: back to the curves, in log scale
        await wait_for(pilot, lambda: screen.query_one("TabbedContent").active == "curves")
        from workbench.tui.widgets.curves import CurvesPanel

        assert screen.query_one(CurvesPanel).log_scale
        await pilot.press("left_square_bracket")  # and [ brings the samples, one step back
        await wait_for(pilot, lambda: screen.query_one("TabbedContent").active == "samples" and screen.shown_step() == 12)
