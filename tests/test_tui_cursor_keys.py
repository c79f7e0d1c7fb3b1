"""j/k, g/G, Home and End move the cursor in every kind of list the app shows: the jobs table on
the home, the runs browser, the FID/IS panel, the new-job form's presets and the `?` key list.
Each list takes these keys from ``workbench.tui.widgets.table.CURSOR_BINDINGS``."""
from __future__ import annotations


import pytest
from textual.widgets import DataTable, OptionList

from tests.tui_fakes import FixedQueue, classifier_eval, job_info, make_run, wait_for
from workbench.tui.app import create_app
from workbench.tui.screens import newjob

pytestmark = pytest.mark.asyncio


def position(widget) -> int | None:
    return widget.cursor_row if isinstance(widget, DataTable) else widget.highlighted


def length(widget) -> int:
    return widget.row_count if isinstance(widget, DataTable) else widget.option_count


async def check_cursor_keys(pilot, widget) -> None:
    """The keys move ``widget``'s cursor to the first, last, next and previous rows."""
    widget.focus()
    await pilot.pause()
    last = length(widget) - 1
    assert last >= 2, "the list needs three rows to tell the keys apart"
    for keys, expected in ((("G",), last), (("k",), last - 1), (("g",), 0), (("j",), 1), (("j", "j"), min(3, last)),
                           (("end",), last), (("home",), 0)):
        await pilot.press(*keys)
        await pilot.pause()
        assert position(widget) == expected, (type(widget).__name__, keys, position(widget), expected)


def three_runs(tmp_path):
    runs = tmp_path / "runs"
    for i, name in enumerate(("made-a", "made-b", "made-c")):
        make_run(runs, name, evaluation=classifier_eval(10.0 + i))
    return runs


@pytest.mark.parametrize("key", ["r", "f"])
async def test_runs_browser_and_fid_panel(tmp_path, key):
    """Bug caught: a browser or panel table that is a plain DataTable (no j/k, g/G, Home/End)."""
    app = create_app(three_runs(tmp_path), queue=FixedQueue([]), image_protocol="halfcell")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press(key)
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count >= 3)
        await check_cursor_keys(pilot, table)


async def test_jobs_table_on_the_home(tmp_path):
    """Bug caught: Home/End not moving the jobs table's cursor (issue 17: `c` hit by accident)."""
    jobs = [job_info(f"j{i}", "queued") for i in range(1, 5)]
    app = create_app(tmp_path / "runs", queue=FixedQueue(jobs), image_protocol="halfcell")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 4)
        await check_cursor_keys(pilot, table)


async def test_help_list(tmp_path):
    app = create_app(tmp_path / "runs", queue=FixedQueue([]), image_protocol="halfcell")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        await pilot.pause()
        await check_cursor_keys(pilot, app.screen.query_one("#help-keys", DataTable))


async def test_new_job_preset_list(tmp_path, monkeypatch):
    """Bug caught: the form's presets in a plain OptionList (no j/k, g/G)."""
    (tmp_path / "presets").mkdir()
    for name in ("a", "b", "c", "d"):
        (tmp_path / "presets" / f"{name}.toml").write_text(f"# preset {name}\n[run]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(newjob, "PROJECT", tmp_path / "project")
    app = create_app(tmp_path / "runs", queue=FixedQueue([]), image_protocol="halfcell")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        listing = app.screen.query_one("#preset", OptionList)
        await check_cursor_keys(pilot, listing)
        assert app.screen.preset.name == "a.toml"  # the highlighted preset is the one loaded
