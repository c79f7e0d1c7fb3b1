"""``genwb queue``: the commands, a second process that adds and cancels jobs while the owner
works, SIGKILL of the worker and a restart that loses nothing, and SIGTERM that checkpoints."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import python_start_s, train_steps, wait
from workbench.cli import main
from workbench.jobs import JobQueue
from workbench.runs import open_run

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["train.val_every=0", "sample.every=0", "eval.test=false", "run.threads=1"]  # one thread: the machine is shared


def long(steps: int) -> list[str]:
    return [f"train.max_steps={steps}", "train.checkpoint_every=20", *QUIET]


def genwb(*args) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", *map(str, args)]


def test_commands_and_their_errors(tiny_preset, isolated):
    runs = str(isolated / "runs")
    cli = CliRunner()
    out = cli.invoke(main, ["queue", "add", str(tiny_preset), "--runs", runs, "--set", "train.max_steps=4", "--name", "first"])
    assert out.exit_code == 0 and out.output.strip() == "j1", out.output
    out = cli.invoke(main, ["queue", "add", str(tiny_preset), "--runs", runs, "--after", "j1", *sum((["--set", s] for s in QUIET), [])])
    assert out.output.strip() == "j2"
    out = cli.invoke(main, ["queue", "list", "--runs", runs])
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["j1", "first", "queued", "0/4"] and lines[1].split()[2] == "waiting"
    for args, message in ((["cancel", "j7"], "no job 'j7'"), (["add", "nope.toml"], "nope.toml: no such preset file"),
                          (["add", str(tiny_preset), "--after", "j9"], "no job 'j9'"),
                          (["add", str(tiny_preset), "--set", "train.lr=-1"], "lr = -1")):
        out = cli.invoke(main, ["queue", *args, "--runs", runs])
        assert out.exit_code == 2 and out.stderr.count("\n") == 1 and message in out.stderr, (args, out.output)
    out = cli.invoke(main, ["queue", "pause", "j1", "--runs", runs])  # no owner: applied to queue.json at once
    assert out.stdout == "j1: pause done\n"
    owner = JobQueue(runs, cpu_slots=1, work=True)  # finds nothing to run: j1 is paused, j2 waits for it
    try:
        out = cli.invoke(main, ["queue", "work", "--runs", runs])
        assert out.exit_code == 2 and f"already worked by process {os.getpid()}" in out.stderr
    finally:
        owner.shutdown()
    assert cli.invoke(main, ["queue", "move", "j2", "0", "--runs", runs]).stdout == "j2: move done\n"
    assert [line.split()[0] for line in cli.invoke(main, ["queue", "list", "--runs", runs]).stdout.splitlines()] == ["j2", "j1"]
    out = cli.invoke(main, ["queue", "remove", "j1", "--runs", runs])
    assert out.exit_code == 2 and "cancel it before removing" in out.stderr
    assert cli.invoke(main, ["queue", "resume", "j1", "--runs", runs]).exit_code == 0
    out = cli.invoke(main, ["queue", "work", "--runs", runs])
    assert out.exit_code == 0, out.output
    assert "[j1] step 4/4" in out.stdout and "[j2] step 24/24" in out.stdout and "[j2] tiny done" in out.stdout
    assert [line.split()[2] for line in cli.invoke(main, ["queue", "list", "--runs", runs]).stdout.splitlines()] == ["done", "done"]
    run_dir = JobQueue(runs, work=False).job("j1").run_dir
    out = cli.invoke(main, ["queue", "add", run_dir, "--runs", runs])
    assert out.exit_code == 2 and "has finished; start a new run" in out.stderr
    out = cli.invoke(main, ["queue", "eval", run_dir, "-n", "40", "--batch-size", "20", "--runs", runs])
    assert out.exit_code == 0 and out.stdout == "j3\n", out.output
    assert cli.invoke(main, ["queue", "list", "--runs", runs]).stdout.splitlines()[-1].split()[:3] == ["j3", f"eval-{Path(run_dir).name}", "queued"]


@pytest.mark.slow
def test_a_second_process_adds_and_cancels_while_the_owner_works(tiny_preset, isolated):
    runs = isolated / "runs"
    owner = JobQueue(runs, cpu_slots=1)
    try:
        busy = owner.submit(tiny_preset, long(5000))
        wait(lambda: owner.job(busy).step >= 4, "the owner to train")
        code = ("import sys\nfrom workbench.cli import main\n"
                "for args in ({add}, {cancel}):\n"
                "    try:\n        main(args)\n    except SystemExit as e:\n        print('EXIT', e.code)\n"
                "print('TEXTUAL', 'textual' in sys.modules)")
        add = ["queue", "add", str(tiny_preset), "--runs", str(runs), *sum((["--set", s] for s in QUIET), [])]
        cancel = ["queue", "cancel", busy, "--runs", str(runs)]
        out = subprocess.run([sys.executable, "-c", code.format(add=add, cancel=cancel)], capture_output=True, text=True,
                             cwd=ROOT, timeout=120)
        assert out.stdout.splitlines() == ["j2", "EXIT 0", f"{busy}: cancel requested", "EXIT 0", "TEXTUAL False"], out.stdout + out.stderr
        wait(lambda: owner.job(busy).state == "cancelled", "the cancel from the other process")
        wait(lambda: owner.job("j2").state == "done", "the job from the other process")
        assert owner.job(busy).step < 5000
    finally:
        owner.shutdown()


@pytest.mark.slow
def test_sigkill_then_restart_finishes_every_job_with_each_step_once(tiny_preset, isolated):
    runs = isolated / "runs"
    client = JobQueue(runs, work=False)
    jobs = [client.submit(tiny_preset, long(120)) for _ in range(2)]
    log = open(isolated / "work1.log", "w")
    worker = subprocess.Popen(genwb("queue", "work", "--runs", runs), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait(lambda: client.job(jobs[0]).step >= 30, "the first job to pass a checkpoint")
    finally:
        worker.kill()
        worker.wait()
    assert worker.returncode == -signal.SIGKILL
    assert client.owner_info() is None and client.job(jobs[0]).state == "running"  # as the dead owner left it
    out = subprocess.run(genwb("queue", "work", "--runs", runs), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "resuming after step" in out.stdout
    for job in jobs:
        info = client.job(job)
        assert info.state == "done" and info.step == 120
        assert train_steps(info.run_dir) == list(range(2, 121, 2)), "every step exactly once"
    client.shutdown()


@pytest.mark.slow
def test_sigterm_checkpoints_and_leaves_a_consistent_queue(tiny_preset, isolated):
    runs = isolated / "runs"
    client = JobQueue(runs, work=False)
    first, second = client.submit(tiny_preset, long(5000)), client.submit(tiny_preset, QUIET)
    worker = subprocess.Popen(genwb("queue", "work", "--runs", runs), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        wait(lambda: client.job(first).step >= 10, "training")
        sent = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30 + 20 * python_start_s())
    finally:
        worker.kill()
    # a checkpoint and an exit: 15 s on a quiet machine, scaled by how slow processes are here now
    limit = 5 + 6 * python_start_s()
    assert worker.returncode == 143 and time.monotonic() - sent < limit, f"not stopped within {limit:.0f} s: {output}"
    assert "SIGTERM: checkpointing running jobs" in output
    saved = json.loads((runs / "queue.json").read_text())
    assert [(j["id"], j["state"]) for j in saved["jobs"]] == [(first, "queued"), (second, "queued")]
    assert saved["commands"] == [] and client.owner_info() is None
    run = open_run(runs / saved["jobs"][0]["run_dir"])  # recorded relative to the runs folder
    assert run.status()["state"] == "interrupted"
    stopped = run.load_checkpoint("last")["step"]
    assert stopped == run.status()["step"] >= 10 and max(train_steps(run.path)) <= stopped
    client.shutdown()


def test_the_plain_reporter_names_each_job_and_the_kind_of_images(capsys):
    from workbench import events as ev
    from workbench.jobreport import QueueReporter

    with QueueReporter(live=False) as report:
        report("j2", ev.Samples(8, Path("r/samples/recon-step-8.png"), None, kind="recon"))
        report("j3", ev.Samples(4, Path("r/samples/step-4.png"), None))
        report("j3", ev.Evaluated(4, "val", {"nll": 70.25, "bpd": 0.12926}, best=True))
    assert capsys.readouterr().out.splitlines() == [
        "[j2] recon step 8: r/samples/recon-step-8.png",
        "[j3] samples step 4: r/samples/step-4.png",
        "[j3] val step 4: nll 70.250 nats  0.1293 bits/dim  (best)",
    ]
