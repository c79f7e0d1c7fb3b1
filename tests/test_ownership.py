"""One writer per run folder: ``genwb run``, a resume, a queue job, an evaluation and sampling into
the run each hold its writer lease; a second writer is refused before it writes anything, in one
line naming the holder; a queue job for a held run waits, blocked, and runs once it is free; a
holder killed with SIGKILL frees the run at once; readers never take the lease or block."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import train_steps, wait
from workbench.cli import main
from workbench.jobs import JobQueue
from workbench.lease import Busy
from workbench.runs import WRITER_FILE, Run, live_state, open_run, run_holder, writing

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--set", "train.val_every=0", "--set", "sample.every=0", "--set", "eval.test=false", "--set", "run.threads=1"]


def genwb(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench.cli", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def only_run(out: Path) -> Path:
    wait(lambda: out.is_dir() and any(p.is_dir() for p in out.iterdir()), "the run folder")
    return next(p for p in out.iterdir() if p.is_dir())


def start_training(tiny_preset, out: Path, steps: int = 100000) -> tuple[subprocess.Popen, Path]:
    """``genwb run`` in a subprocess, until it has written its first checkpoint."""
    proc = genwb("run", tiny_preset, "--out", out, "--set", f"train.max_steps={steps}", "--set", "train.checkpoint_every=5",
                 *QUIET)
    run = only_run(out)
    wait(lambda: (run / "checkpoints" / "last.pt").exists() or proc.poll() is not None, "the first checkpoint")
    assert proc.poll() is None, proc.communicate()
    return proc, run


@pytest.fixture
def holder_process():
    """A process that holds a run's writer lease until it is told to stop (or killed)."""
    procs = []

    def hold(run: Path) -> subprocess.Popen:
        code = ("import sys\nfrom workbench.runs import writing\n"
                f"with writing({str(run)!r}, 'trained', 'a test'):\n    print('held', flush=True)\n    sys.stdin.read()\n")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_a_resume_while_genwb_run_trains_is_refused_and_the_metrics_stay_in_order(tiny_preset, isolated):
    proc, run = start_training(tiny_preset, isolated / "runs")
    try:
        second = genwb("run", "--resume", run)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"being trained by pid {proc.pid}" in err and "wait for it or stop it first" in err, err
        queued = CliRunner().invoke(main, ["queue", "add", str(run), "--runs", str(isolated / "runs")])
        assert queued.exit_code == 2 and f"being trained by pid {proc.pid}" in queued.stderr, queued.output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 143
    steps = train_steps(run)
    assert steps == sorted(set(steps)) and steps, "metrics.jsonl keeps strictly increasing steps"
    assert run_holder(run) is None and live_state(run)[0] == "interrupted"


@pytest.mark.slow
def test_a_holder_killed_with_sigkill_frees_the_run_at_once(tiny_preset, isolated):
    proc, run = start_training(tiny_preset, isolated / "runs")
    assert run_holder(run).pid == proc.pid and run_holder(run).purpose == "trained"
    proc.kill()
    proc.wait()
    assert run_holder(run) is None  # the lock went with the process: nothing to wait for, nothing to break
    assert live_state(run)[0] == "interrupted"  # status.json still says running; nobody holds it
    # the killed process may have logged past its last checkpoint: the resume must replace those rows, not repeat them
    target = max(train_steps(run)) + 10
    done = genwb("run", "--resume", run, "--set", f"train.max_steps={target}")
    out, err = done.communicate(timeout=240)
    assert done.returncode == 0, err
    assert train_steps(run) == list(range(2, target + 1, 2))


def test_a_queue_job_for_a_held_run_waits_blocked_then_runs_each_step_once(tiny_preset, isolated, holder_process):
    runs = isolated / "runs"
    first = CliRunner().invoke(main, ["run", str(tiny_preset), "--out", str(runs), "--set", "train.max_steps=6",
                                      "--set", "train.checkpoint_every=6", *QUIET])
    assert first.exit_code == 0, first.output
    run = only_run(runs)
    Run(run, None).write_status("paused", 6)
    config = (run / "config.toml").read_text().replace("max_steps = 6", "max_steps = 12")
    (run / "config.toml").write_text(config)
    holder = holder_process(run)
    q = JobQueue(runs, cpu_slots=1)
    try:
        with pytest.raises(Busy, match=f"being trained by pid {holder.pid}"):
            q.submit_resume(run)
        job = q.submit_resume(run, wait=True)
        wait(lambda: q.job(job).blocked, "the job to be blocked")
        assert f"pid {holder.pid}" in q.job(job).blocked and q.job(job).state == "queued"
        listed = CliRunner().invoke(main, ["queue", "list", "--runs", str(runs)])
        assert f"blocked by pid {holder.pid}" in listed.stdout, listed.output
        holder.stdin.close()
        holder.wait()
        wait(lambda: q.job(job).state == "done", f"the job to run once the run is free ({q.job(job)})")
    finally:
        q.shutdown()
    assert train_steps(run) == list(range(2, 13, 2)), "each step once"


def test_two_threads_never_write_one_run_and_the_lease_is_reentrant_in_its_thread(tiny_preset, isolated):
    from workbench.config import load_config

    run = Run.create(load_config(tiny_preset), isolated / "runs")
    refused = []
    with writing(run.path, "trained", "job j1"):
        with writing(run.path, "trained"):  # the queue's worker, then the Trainer it runs
            pass
        t = threading.Thread(target=lambda: refused.append(pytest.raises(Busy, writing(run.path).__enter__)))
        t.start()
        t.join()
        assert run_holder(run.path).here and run_holder(run.path).label == "job j1"
    assert refused and "being trained by this process" in str(refused[0].value)
    assert run_holder(run.path) is None
    with writing(run.path, "evaluated"):
        pass


def test_deleting_or_linking_the_lease_file_frees_nothing_and_writes_through_nothing(tiny_preset, isolated,
                                                                                       holder_process):
    from workbench.config import load_config

    run = Run.create(load_config(tiny_preset), isolated / "runs").path
    holder = holder_process(run)
    (run / WRITER_FILE).unlink()  # as if it were a stale lock
    with pytest.raises(Busy):
        with writing(run):
            pass
    holder.kill()
    holder.wait()
    target = isolated / "precious.txt"
    target.write_text("keep me")
    (run / WRITER_FILE).unlink(missing_ok=True)
    (run / WRITER_FILE).symlink_to(target)
    with pytest.raises(Exception, match="symbolic link"):
        with writing(run):
            pass
    assert target.read_text() == "keep me"


def test_readers_never_create_files_or_block(tiny_preset, isolated, holder_process):
    from workbench.config import load_config

    run = Run.create(load_config(tiny_preset), isolated / "runs").path
    assert run_holder(run) is None and not (run / WRITER_FILE).exists()
    holder = holder_process(run)
    who = run_holder(run)
    assert who.pid == holder.pid and who.label == "a test" and not who.here


def test_sampling_into_a_run_being_trained_is_refused_and_elsewhere_allowed(tiny_preset, isolated, holder_process):
    runs = isolated / "runs"
    made = CliRunner().invoke(main, ["run", str(tiny_preset), "--out", str(runs), *QUIET, "--set", "train.max_steps=4"])
    assert made.exit_code == 0, made.output
    run = only_run(runs)
    holder = holder_process(run)
    cli = CliRunner()
    inside = cli.invoke(main, ["sample", str(run), "-n", "2", "--checkpoint", "last", "--device", "cpu"])
    assert inside.exit_code == 2 and f"pid {holder.pid}" in inside.stderr and "--out FILE" in inside.stderr, inside.output
    elsewhere = cli.invoke(main, ["sample", str(run), "-n", "2", "--checkpoint", "last", "--device", "cpu",
                                  "--out", str(isolated / "look.png")])
    assert elsewhere.exit_code == 0 and (isolated / "look.png").exists(), elsewhere.output
    evaluated = cli.invoke(main, ["eval", str(run), "-n", "20"])
    assert evaluated.exit_code == 2 and f"being trained by pid {holder.pid}" in evaluated.stderr, evaluated.output


def test_sampling_a_run_that_trains_before_its_first_checkpoint_says_to_wait(tiny_preset, isolated, holder_process):
    from workbench.config import load_config

    run = Run.create(load_config(tiny_preset), isolated / "runs").path
    holder_process(run)
    out = CliRunner().invoke(main, ["sample", str(run), "--out", str(isolated / "x.png")])
    assert out.exit_code == 2 and "wait for its first checkpoint" in out.stderr, out.output
    assert "--resume" not in out.stderr


def test_config_toml_records_the_folder_and_device_the_run_was_made_with(tiny_preset, isolated):
    out = isolated / "elsewhere" / "runs"
    made = CliRunner().invoke(main, ["run", str(tiny_preset), "--out", str(out), "--device", "cpu", *QUIET,
                                     "--set", "train.max_steps=2", "--set", "run.name=a b"])
    assert made.exit_code == 0, made.output
    config = open_run(only_run(out)).config
    assert config.run.out == str(out) and config.run.device == "cpu" and config.run.name == "a-b"
