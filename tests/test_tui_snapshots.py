"""Snapshots (pytest-textual-snapshot) of the app's home: the split jobs screen at 80x24, 100x30
and 160x48, the new-job form and the quit confirmation, with fixed content
(tests/tui_snapshot_helpers.py) and fixed resource meters (two fake GPUs).

Update them after a deliberate change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and look at the SVGs in tests/__snapshots__/ before committing."""
from __future__ import annotations

import pytest

from tests.tui_snapshot_helpers import app_for, make_workspace, settle
from workbench.resources import GpuReading, ResourceMonitor, Snapshot

SIZE = (120, 40)
GiB = 1024 ** 3


class FixedMonitor(ResourceMonitor):
    """The same readings every time, with a fixed history: the meters draw the same picture."""

    def sample(self) -> Snapshot:
        ramp = [float(10 * (i % 10)) for i in range(40)]
        return Snapshot(gpus=[GpuReading(0, "NVIDIA H200", 87.0, 61 * GiB, 141 * GiB),
                              GpuReading(1, "NVIDIA H200", 3.0, 1 * GiB, 141 * GiB)],
                        cpu=180.0, rss=int(2.5 * GiB),
                        history={"gpu0.util": ramp, "gpu0.mem": [43.0] * 40, "gpu1.util": [3.0] * 40,
                                 "gpu1.mem": [1.0] * 40, "cpu": [180.0] * 40, "rss": [2.5 * GiB] * 40})


def home_app(workspace, jobs=None):
    app = app_for(workspace, jobs)
    app.resource_monitor = FixedMonitor()
    return app


async def settle_home(pilot) -> None:
    """Wait until every pane of the home is drawn, then lay the table out once more from its
    final cells: column widths grown cell by cell as sparklines arrive depend on their order."""
    from workbench.tui.widgets.job_table import JobTable

    await settle(pilot, lambda: home_ready(pilot))
    table = pilot.app.screen.query_one(JobTable)
    table.shown_columns = []
    table._fit()
    await settle(pilot)


def home_ready(pilot) -> bool:
    from workbench.tui.widgets.curves import CurvesPanel
    from workbench.tui.widgets.job_panes import JobPanes
    from workbench.tui.widgets.meters import MetersPanel

    screen = pilot.app.screen
    panes = screen.query_one(JobPanes)
    curves = screen.query(CurvesPanel)
    narrow = pilot.app.size.width < 90
    from workbench.tui.widgets.job_table import JobTable

    table = screen.query_one(JobTable)
    sparks_shown = all(str(table._cells.get(j, {}).get("curve", "")) == line for j, line in pilot.app.sparks.items())
    return (sparks_shown and bool(panes.log_lines) and (narrow or panes._grid is not None) and bool(curves) and curves.first()._loaded
            and "GPU1" in str(screen.query_one(MetersPanel).render()) and len(pilot.app.sparks) >= 3)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    return make_workspace(tmp_path, monkeypatch)


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 48)], ids=["80x24", "100x30", "160x48"])
def test_home(workspace, snap_compare, size):
    async def run_before(pilot):
        await settle_home(pilot)

    assert snap_compare(home_app(workspace), terminal_size=size, run_before=run_before)


def test_jobs_screen_empty(workspace, snap_compare):
    assert snap_compare(home_app(workspace, jobs=[]), terminal_size=SIZE, run_before=settle)


def test_new_job_form(workspace, snap_compare):
    async def run_before(pilot):
        await settle_home(pilot)  # the home behind it, fully drawn
        await pilot.press("n")
        await settle(pilot)
        pilot.app.screen.choose(workspace["runs"].parent / "presets" / "tiny.toml")
        await settle(pilot, lambda: len(pilot.app.screen.query("#fields Input")) > 5)
        pilot.app.screen.query_one("#preset").focus()

    assert snap_compare(home_app(workspace), terminal_size=SIZE, run_before=run_before)


def test_quit_confirmation(workspace, snap_compare):
    app = home_app(workspace)
    app.owns_queue = True  # as if the app had opened the queue itself: quitting stops its jobs

    async def run_before(pilot):
        await settle_home(pilot)
        await pilot.press("q")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
