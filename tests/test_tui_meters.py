"""Resource meters with a fake NVML and a fake psutil: per-GPU utilisation and memory, the job
process's CPU and RAM, bounded histories, "no GPU" without one (never an error), and the home
screen's panes and columns at every size, resized both ways."""
from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from tests.tui_fakes import FixedQueue, job_info, make_run, wait_for
from workbench.resources import ResourceMonitor
from workbench.tui.app import create_app, run_sparkline
from workbench.tui.widgets.job_panes import JobPanes
from workbench.tui.widgets.job_table import COLUMNS, DROP_ORDER, JobTable, fitting_columns
from workbench.tui.widgets.meters import MetersPanel, render_snapshot

GiB = 1024 ** 3


class FakeNVML:
    """Two GPUs: utilisation 10 % and 95 %, 1 and 70 GiB used of 80."""

    def __init__(self, count=2, fail_init=False):
        self.count, self.fail_init, self.reads = count, fail_init, 0

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H200"

    def nvmlDeviceGetUtilizationRates(self, h):
        self.reads += 1
        return SimpleNamespace(gpu=[10, 95][h])

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=[1, 70][h] * GiB, total=80 * GiB)


class FakePsutil:
    class NoSuchProcess(Exception):
        pass

    def __init__(self, alive=True):
        self.alive = alive

    def Process(self, pid):
        if not self.alive:
            raise self.NoSuchProcess(pid)
        return SimpleNamespace(cpu_percent=lambda interval=None: 150.0,
                               memory_info=lambda: SimpleNamespace(rss=3 * GiB),
                               oneshot=contextlib.nullcontext)


def test_monitor_reads_each_gpu_and_the_process_with_bounded_history():
    """Bug caught: only the first GPU read, memory as a fraction, or an unbounded history."""
    monitor = ResourceMonitor(123, nvml=FakeNVML(), psutil=FakePsutil(), history=3)
    for _ in range(5):
        snap = monitor.sample()
    assert [(g.index, g.util, g.mem_used // GiB, g.mem_total // GiB) for g in snap.gpus] == [(0, 10, 1, 80), (1, 95, 70, 80)]
    assert snap.cpu == 150.0 and snap.rss == 3 * GiB and snap.gpu_note == ""
    assert snap.history["gpu1.util"] == [95, 95, 95] and len(snap.history["cpu"]) == 3
    assert snap.history["gpu1.mem"][-1] == pytest.approx(87.5)
    text = render_snapshot(snap, 80).plain
    assert "GPU0" in text and "GPU1" in text and "95% util" in text and "70.0/80 GiB" in text
    assert "CPU   150%" in text and "RAM  3.0 GiB" in text


@pytest.mark.parametrize("nvml", [FakeNVML(fail_init=True), FakeNVML(count=0)])
def test_no_gpu_is_said_not_raised(nvml):
    """Bug caught: an NVMLError (no driver) or zero devices raising out of the meters."""
    monitor = ResourceMonitor(123, nvml=nvml, psutil=FakePsutil(alive=False))
    snap = monitor.sample()
    assert snap.gpus == [] and snap.gpu_note.startswith("no GPU")
    assert snap.cpu is None and "NoSuchProcess" in snap.proc_note
    text = render_snapshot(snap, 60).plain
    assert text.startswith("no GPU") and "NoSuchProcess" in text


def test_run_sparkline_shows_the_whole_run_not_only_the_first_drop():
    """Bug caught (issue 17): a loss that falls from 540 to 120 at once, then slowly to 100,
    drawn as one tall bar and a flat line."""
    values = [540, 300, 200] + [120 - i * 0.2 for i in range(100)]
    line = run_sparkline(values, 14)
    assert len(line) == 14 and line[0] == "█" and line[-1] == "▁"
    assert len(set(line[2:])) >= 5  # the slow part has visible levels


def test_columns_drop_in_the_stated_order_and_never_the_state():
    """Bug caught: dropping the state column, or dropping columns in another order."""
    widths = {key: 10 for key, _ in COLUMNS}
    everything = fitting_columns(widths, 1000)
    assert everything == [k for k, _ in COLUMNS]
    tiny = fitting_columns(widths, 10)
    assert tiny == ["id", "state"]
    for n in range(len(DROP_ORDER)):
        shown = fitting_columns(widths, 12 * (len(COLUMNS) - n))
        assert [k for k, _ in COLUMNS if k not in shown] == sorted(DROP_ORDER[:n], key=[k for k, _ in COLUMNS].index)


def fixed_app(tmp_path, jobs, monitor=None):
    app = create_app(tmp_path / "runs", queue=FixedQueue(jobs), image_protocol="halfcell")
    app.resource_monitor = monitor
    return app


@pytest.mark.asyncio
async def test_home_panes_follow_the_selected_job_and_show_meters(tmp_path):
    """Bug caught: panes that keep the first job, meters that never draw, a log that is not the job's."""
    runs = tmp_path / "runs"
    a = make_run(runs, "tiny-a", state="running")
    b = make_run(runs, "tiny-b", state="finished", loss0=900.0)
    jobs = [job_info("j1", "running", run_dir=str(a)), job_info("j2", "done", run_dir=str(b))]
    app = fixed_app(tmp_path, jobs, ResourceMonitor(1, nvml=FakeNVML(), psutil=FakePsutil()))
    async with app.run_test(size=(160, 48)) as pilot:
        panes = app.screen.query_one(JobPanes)
        meters = app.screen.query_one(MetersPanel)
        await wait_for(pilot, lambda: panes.run_dir == a and panes.log_lines)
        await wait_for(pilot, lambda: "GPU1" in str(meters.render()))
        assert panes.sample_path is not None and panes.sample_path.parent == a / "samples"
        await pilot.press("j")
        await wait_for(pilot, lambda: panes.run_dir == b and panes.log_lines and "loss 895" in panes.log_lines[0])
        assert panes.sample_path is None or panes.sample_path.parent == b / "samples"


@pytest.mark.asyncio
async def test_home_without_gpu_says_no_gpu(tmp_path):
    app = fixed_app(tmp_path, [job_info("j1", "queued")], ResourceMonitor(1, nvml=FakeNVML(fail_init=True), psutil=FakePsutil()))
    async with app.run_test(size=(100, 30)) as pilot:
        meters = app.screen.query_one(MetersPanel)
        await wait_for(pilot, lambda: "no GPU" in str(meters.render()))


@pytest.mark.asyncio
async def test_resize_both_ways_redraws_the_columns(tmp_path):
    """Bug caught: columns chosen once at start (cut at 80 columns, or missing after growing again)."""
    run = make_run(tmp_path / "runs", "tiny-a", state="running")
    jobs = [job_info("j1", "running", step=12, loss=510.25, images_per_s=4310.2, eta_s=75, run_dir=str(run)),
            job_info("j2", "waiting", after="j1")]
    app = fixed_app(tmp_path, jobs, ResourceMonitor(1, nvml=FakeNVML(count=0), psutil=FakePsutil()))
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.screen.query_one(JobTable)
        await wait_for(pilot, lambda: table.shown_columns == [k for k, _ in COLUMNS])
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: "dataset" not in table.shown_columns)
        assert "state" in table.shown_columns and "id" in table.shown_columns
        assert table.virtual_size.width <= table.size.width
        assert [str(c) for c in table.get_row_at(0)][table.shown_columns.index("state")] == "running"
        await pilot.resize_terminal(160, 48)
        await wait_for(pilot, lambda: table.shown_columns == [k for k, _ in COLUMNS])


@pytest.mark.asyncio
async def test_a_long_job_name_is_cut_before_the_name_column_goes(tmp_path):
    """Bug caught (tmux walk at 80x24): an evaluation job's name ("eval-cvae-20261205-123937")
    was too wide, so the name column was dropped for every job and its row read "j2 queued"."""
    from workbench.tui.widgets.job_table import MIN_NAME

    run = make_run(tmp_path / "runs", "made-a", state="running")
    jobs = [job_info("j1", "running", name="made", step=8790, total=100000, loss=252.7, eta_s=24660, run_dir=str(run)),
            job_info("j2", "queued", kind="eval", name="eval-cvae-20261205-123937", model="cvae")]
    app = fixed_app(tmp_path, jobs, ResourceMonitor(1, nvml=FakeNVML(count=0), psutil=FakePsutil()))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(JobTable)
        await wait_for(pilot, lambda: table.row_count == 2 and "name" in table.shown_columns)
        names = [str(table.get_row_at(i)[table.shown_columns.index("name")]) for i in range(2)]
        assert names[0] == "made" and names[1].startswith("eval-cvae") and names[1].endswith("…")
        assert len(names[1]) >= MIN_NAME and "state" in table.shown_columns
        assert table.virtual_size.width <= table.size.width
        await pilot.resize_terminal(160, 48)  # room again: the whole name
        await wait_for(pilot, lambda: str(table.get_row_at(1)[table.shown_columns.index("name")]) == jobs[1].name)
