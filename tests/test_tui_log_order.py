"""The home log pane and the detail Log tab show a run's lines in the order they happened: by
step, a step's metrics row before its events (samples, checkpoint), events in arrival order.
The rows come from metrics.jsonl, read by a poll; the events come from the queue at once, so
they reach the app before the rows of their own step (issue 17's tmux walk)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.tui_fakes import FixedQueue, job_info, make_run, wait_for
from workbench import events as ev
from workbench.tui.app import create_app
from workbench.tui.screens.detail import DetailScreen
from workbench.tui.steplog import ROW, StepLog
from workbench.tui.widgets.job_panes import JobPanes, metrics_line


def append_rows(run: Path, *steps: int) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        for step in steps:
            f.write(json.dumps({"step": step, "epoch": 0, "split": "train", "loss": 500.0 - step}) + "\n")


def send(queue: FixedQueue, job_id: str, *events) -> None:
    for event in events:
        for callback in list(queue.subscribers):
            callback(job_id, event)


def step_of(line: str) -> int:
    return int(re.match(r"(?:step )?(\d+)", line).group(1))


def check_order(lines: list[str]) -> None:
    """Steps never go down; at step 8 the row, then the samples, then the checkpoint."""
    steps = [step_of(line) for line in lines]
    assert steps == sorted(steps), lines
    at8 = [line for line in lines if step_of(line) == 8]
    assert len(at8) == 3 and "train" in at8[0] and "samples" in at8[1] and "checkpoint" in at8[2], at8


def events_of_step_8(run: Path):
    return (ev.Samples(8, run / "samples" / "step-8.png", None), ev.Checkpointed(8, run / "checkpoints" / "last.pt"))


@pytest.mark.asyncio
async def test_home_log_pane_orders_events_among_the_rows_by_step(tmp_path):
    """Bug caught: the pane appending queue events on arrival and metrics rows when the poll read
    them, so "step 8: checkpoint" stood above the rows of steps 8 and 10 (issue 17, tmux walk)."""
    run = make_run(tmp_path / "runs", "tiny-a", state="running", steps=6)
    queue = FixedQueue([job_info("j1", "running", run_dir=str(run))])
    app = create_app(tmp_path / "runs", queue=queue, image_protocol="halfcell")
    async with app.run_test(size=(160, 48)) as pilot:
        panes = app.screen.query_one(JobPanes)
        await wait_for(pilot, lambda: any(line.startswith("6: val") for line in panes.log_lines))
        send(queue, "j1", *events_of_step_8(run))  # the events first, as an attached client may see them
        await wait_for(pilot, lambda: any("checkpoint" in line for line in panes.log_lines))
        append_rows(run, 8, 10)  # then the poll reads the rows of their step and the next
        await wait_for(pilot, lambda: any(line.startswith("10: train") for line in panes.log_lines))
        check_order(panes.log_lines)
        assert "8: checkpoint last.pt" in panes.log_lines  # as the rows read, without "step "
        shown = str(app.screen.query_one("#pane-log").render())
        check_order([line for line in shown.splitlines() if line.strip()])


@pytest.mark.asyncio
async def test_detail_log_tab_orders_events_among_the_rows_by_step(tmp_path):
    """Bug caught: the Log tab writing an event line when the queue announced it, ahead of the
    metrics rows of its step that the next read of metrics.jsonl brought."""
    from textual.widgets import RichLog

    run = make_run(tmp_path / "runs", "tiny-a", state="running", steps=6)
    queue = FixedQueue([job_info("j1", "running", run_dir=str(run))])
    app = create_app(tmp_path / "runs", queue=queue, image_protocol="halfcell")
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(DetailScreen(run, job_id="j1", tab="log"))
        await pilot.pause()
        view = app.screen.query_one("#log-view", RichLog)

        def lines():
            return [line.text for line in view.lines]

        await wait_for(pilot, lambda: any(line.startswith("step 6: val") for line in lines()))
        send(queue, "j1", *events_of_step_8(run))
        await wait_for(pilot, lambda: any("checkpoint" in line for line in lines()))
        append_rows(run, 8, 10)
        await wait_for(pilot, lambda: any(line.startswith("step 10: train") for line in lines()))
        check_order(lines())
        assert lines() == app.screen.step_log.lines()


def test_steplog_holds_events_that_arrived_after_the_read_started():
    """The Trainer writes a step's row before it emits the step's events, so a read that started
    before an event arrived may lack that row: the event waits for the next read. Catches taking
    every event at once (the checkpoint line written above its own row, then the view redrawn)."""
    log = StepLog(100)
    events = [(1, 4, "step 4: checkpoint")]
    assert log.take([(2, "2: train")], events, upto_seq=0) == ["2: train"]
    assert log.take([(4, "4: train")], events, upto_seq=1) == ["4: train", "step 4: checkpoint"]
    assert log.take([], events, upto_seq=1) == []  # taken once
    assert log.take([(3, "3: late")], [], upto_seq=1) is None  # before shown lines: draw again
    assert log.lines() == ["2: train", "3: late", "4: train", "step 4: checkpoint"]
    log.add(4, "4: val", ROW)
    assert log.lines()[-2:] == ["4: val", "step 4: checkpoint"]  # rows before events at one step
    small = StepLog(2)
    for step in (3, 1, 2):
        small.add(step, str(step), ROW)
    assert small.lines() == ["2", "3"]  # full: the lowest steps go


def test_home_log_line_leaves_out_a_part_equal_to_the_loss():
    """Bug caught (tmux walk at 80x24): "70: train loss 415.6 nll 41…" in the 30-column log
    pane, an autoregressive model's nll repeating its loss and cutting the line."""
    assert metrics_line({"step": 70, "split": "train", "loss": 415.6, "nll": 415.6, "lr": 1e-3}) == "70: train loss 415.6"
    assert metrics_line({"step": 7, "loss": 9.0, "recon": 7.0, "kl": 2.0}) == "7: train loss 9 recon 7 kl 2"
    assert metrics_line({"step": 6, "split": "val", "nll": 5.0, "bpd": 0.01}) == "6: val nll 5 bpd 0.01"
