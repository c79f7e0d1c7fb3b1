"""Snapshots (pytest-textual-snapshot) of the app's views: the job detail (curves, samples), the runs
browser and the FID/IS panel, with fixed content (tests/tui_snapshot_helpers.py).

Update them after a deliberate change with ``pytest tests/test_tui_snapshots_views.py --snapshot-update``
and look at the SVGs in tests/__snapshots__/ before committing."""
from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable

from tests.tui_snapshot_helpers import app_for, make_workspace, settle
from workbench import reference

SIZE = (120, 40)


#: Fixed floor and ceiling rows (copies of measured ones): the panel's snapshots must not change when
#: benchmarks/bench_fid.py re-measures benchmarks/results/.
FIXED_REFERENCES = Path(__file__).parent / "fixtures" / "reference"


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setattr(reference, "RESULTS", FIXED_REFERENCES)
    return make_workspace(tmp_path, monkeypatch)


def test_detail_curves(workspace, snap_compare):
    async def run_before(pilot):
        await pilot.press("down", "enter")
        await settle(pilot)

    assert snap_compare(app_for(workspace), terminal_size=SIZE, run_before=run_before)


def test_detail_samples(workspace, snap_compare):
    async def run_before(pilot):
        await pilot.press("down", "enter", "2")
        await settle(pilot)

    assert snap_compare(app_for(workspace), terminal_size=SIZE, run_before=run_before)


def test_runs_browser(workspace, snap_compare):
    async def run_before(pilot):
        await pilot.press("r")
        await settle(pilot, lambda: pilot.app.screen.query_one(DataTable).row_count == 3)

    assert snap_compare(app_for(workspace), terminal_size=SIZE, run_before=run_before)


def test_fid_panel(workspace, snap_compare):
    async def run_before(pilot):
        await pilot.press("f")
        await settle(pilot, lambda: pilot.app.screen.query_one(DataTable).row_count >= 3)

    assert snap_compare(app_for(workspace), terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 48)])
def test_runs_browser_sizes(workspace, snap_compare, size):
    """Columns drop in DROP_ORDER (screens/runs.py), never the run or its state; the footer keeps q and esc."""
    async def run_before(pilot):
        await pilot.press("r")
        await settle(pilot, lambda: pilot.app.screen.query_one(DataTable).row_count == 3)

    assert snap_compare(app_for(workspace), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 48)])
def test_detail_curves_sizes(workspace, snap_compare, size):
    async def run_before(pilot):
        await pilot.press("down", "enter")
        await settle(pilot)

    assert snap_compare(app_for(workspace), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 48)], ids=["80x24", "100x30", "160x48"])
def test_fid_panel_sizes(workspace, snap_compare, size):
    """Columns drop in DROP_ORDER (screens/evaluation.py), never the run or its model (or the
    reference's floor/ceiling); the footer keeps esc Back."""
    async def run_before(pilot):
        await pilot.press("f")
        await settle(pilot, lambda: pilot.app.screen.query_one(DataTable).row_count >= 3)

    assert snap_compare(app_for(workspace), terminal_size=size, run_before=run_before)
