"""Snapshots (pytest-textual-snapshot) of the app's home: the jobs screen, the new-job form and the
quit confirmation, with fixed content (tests/tui_snapshot_helpers.py).

Update them after a deliberate change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and look at the SVGs in tests/__snapshots__/ before committing."""
from __future__ import annotations

import pytest
from textual.widgets import Select

from tests.tui_snapshot_helpers import app_for, make_workspace, settle

SIZE = (120, 40)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    return make_workspace(tmp_path, monkeypatch)


def test_jobs_screen(workspace, snap_compare):
    assert snap_compare(app_for(workspace), terminal_size=SIZE, run_before=settle)


def test_jobs_screen_empty(workspace, snap_compare):
    assert snap_compare(app_for(workspace, jobs=[]), terminal_size=SIZE, run_before=settle)


def test_new_job_form(workspace, snap_compare):
    async def run_before(pilot):
        await pilot.press("n")
        await settle(pilot)
        pilot.app.screen.query_one("#preset", Select).value = str(workspace["runs"].parent / "presets" / "tiny.toml")
        await settle(pilot, lambda: len(pilot.app.screen.query("#fields Input")) > 5)
        pilot.app.screen.query_one("#preset", Select).focus()

    assert snap_compare(app_for(workspace), terminal_size=SIZE, run_before=run_before)


def test_quit_confirmation(workspace, snap_compare):
    app = app_for(workspace)
    app.owns_queue = True  # as if the app had opened the queue itself: quitting stops its jobs

    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("q")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
