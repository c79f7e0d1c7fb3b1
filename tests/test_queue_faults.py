"""The queue's faults found by a hostile probe, each fixed at its root: a queue file read record by
record (nothing dropped or rewritten from a record it could not read), numbered commands (a later
command wins, none is lost when an owner dies), no lock or state file followed through a link,
ownership that survives a deleted lock file and a client's probe, run folders recorded relative
to the runs folder, an honest summary when queue.json cannot be written, and the queue's states
written into each run's status.json."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import train_steps, wait
from workbench.cli import main
from workbench.errors import UserError
from workbench.jobs import JobQueue
from workbench.lease import holder
from workbench.queuefile import LOCK_FILE

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["train.val_every=0", "sample.every=0", "eval.test=false", "run.threads=1"]


def long(steps: int) -> list[str]:
    return [f"train.max_steps={steps}", "train.checkpoint_every=10", *QUIET]


@pytest.fixture
def queues(isolated):
    made = []

    def make(**kwargs) -> JobQueue:
        q = JobQueue(isolated / "runs", **kwargs)
        made.append(q)
        return q

    yield make
    for q in reversed(made):
        q.shutdown()


def edit_queue(runs: Path, change) -> None:
    path = runs / "queue.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_deleted_lock_file_does_not_let_a_second_owner_in(tiny_preset, queues, isolated):
    """Probe case 3: queue.lock deleted as a "stale lock" while its owner works."""
    first = queues(cpu_slots=1)
    assert first.owner
    (isolated / "runs" / LOCK_FILE).unlink()
    second = queues(cpu_slots=1)
    assert not second.owner and second.owner_info()["pid"] is not None


def test_a_client_probing_for_an_owner_never_stops_one_from_starting(isolated):
    """Probe case 19: `queue work` refused 1 start in 8 while a client checked for an owner."""
    runs = isolated / "runs"
    runs.mkdir()
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            holder(runs, LOCK_FILE)

    threads = [threading.Thread(target=probe) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            q = JobQueue(runs, cpu_slots=1)
            owner = q.owner
            q.shutdown()
            assert owner, "a probe made the owner's start fail"
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_a_bad_record_is_reported_kept_as_it_is_and_never_run(tiny_preset, queues, isolated):
    """Probe cases 5, 8, 11-12: a record with "overrides": 5, "gpus": "x" or "step": "x"."""
    runs = isolated / "runs"
    client = queues(work=False)
    good, bad, worse = (client.submit(tiny_preset, long(4)) for _ in range(3))

    def damage(data):
        data["jobs"][1]["overrides"] = 5
        data["jobs"][2]["gpus"] = "x"
        data["jobs"][2]["step"] = "x"

    edit_queue(runs, damage)
    raw = json.loads((runs / "queue.json").read_text())["jobs"][1:]
    assert [j.id for j in client.jobs()] == [good]
    problems = client.problems()
    assert len(problems) == 2 and "(j2) cannot be read: field 'overrides' must be a list of strings, not 5" in problems[0]
    assert "(j3)" in problems[1] and "fix or remove it" in problems[1]
    listed = CliRunner().invoke(main, ["queue", "list", "--runs", str(runs)])
    assert listed.exit_code == 0 and "j2" in listed.stderr and listed.stderr.count("warning:") == 2, listed.output
    owner = queues(cpu_slots=1)
    wait(lambda: owner.job(good).state == "done", "the good job")
    owner.shutdown()
    saved = json.loads((runs / "queue.json").read_text())["jobs"]
    assert [r for r in saved if r.get("id") in (bad, worse)] == raw, "the bad records are written back as they were"
    assert owner.submit(tiny_preset, long(4)) == "j4", "their ids stay taken"


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.update(next_id="abc"), 'next_id must be an integer >= 1, not "abc"'),
    (lambda d: d.update(next_id=None), "next_id must be an integer >= 1, not null"),
    (lambda d: d.update(commands=5), "commands must be a list, not int"),
    (lambda d: d.update(jobs={"a": 1}), "jobs must be a list, not dict"),
    (lambda d: d.update(format=9), "written by a newer genwb"),
])
def test_a_damaged_top_level_is_one_line_everywhere(tiny_preset, queues, isolated, damage, message):
    """Probe case 11: tracebacks in `queue list`, `queue work` and the app."""
    runs = isolated / "runs"
    queues(work=False).submit(tiny_preset, long(4))
    edit_queue(runs, damage)
    before = (runs / "queue.json").read_text()
    for args in (["queue", "list"], ["queue", "work"], ["queue", "add", str(tiny_preset)]):
        out = CliRunner().invoke(main, [*args, "--runs", str(runs)])
        assert out.exit_code == 2 and out.stderr.count("\n") == 1 and message in out.stderr, (args, out.output)
        assert "not a queue file" in out.stderr and "move it aside" in out.stderr
    assert (runs / "queue.json").read_text() == before


def test_a_deeply_nested_queue_file_is_one_line(isolated):
    runs = isolated / "runs"
    runs.mkdir()
    (runs / "queue.json").write_text("[" * 100_000)
    out = CliRunner().invoke(main, ["queue", "list", "--runs", str(runs)])
    assert out.exit_code == 2 and "not a queue file" in out.stderr and out.stderr.count("\n") == 1, out.output


def test_a_command_that_cannot_be_read_is_ignored_and_its_job_kept(tiny_preset, queues, isolated):
    """Probe case 4: a pending {"op": "move", "id": "j1", "position": "x"} took j1 out of the order."""
    runs = isolated / "runs"
    client = queues(work=False)
    a, b = client.submit(tiny_preset, long(4)), client.submit(tiny_preset, long(4), after="j1")
    edit_queue(runs, lambda d: d["commands"].append({"op": "move", "id": a, "position": "x", "seq": 1}))
    assert any("command 1 cannot be read (position must be an integer >= 0, not \"x\")" in p for p in client.problems())
    owner = queues(cpu_slots=1)
    wait(lambda: owner.job(b).state == "done", "both jobs, in order")
    assert [j.id for j in owner.jobs()] == [a, b]


def test_later_commands_win_and_none_is_lost_when_the_owner_dies(tiny_preset, queues, isolated):
    """Probe case 6: a cancel left pending for a frozen owner that then died, followed by pause and
    resume applied directly: the next owner applied the old cancel last."""
    runs = isolated / "runs"
    client = queues(work=False)
    job = client.submit(tiny_preset, long(4))
    edit_queue(runs, lambda d: d.update(seq=1, commands=[{"seq": 1, "op": "cancel", "id": job, "position": None,
                                                          "overrides": []}]))
    with pytest.raises(UserError, match="already cancelled"):
        client.pause(job)  # no owner alive: the pending cancel first, in order, then this
    client.resume(job)
    assert client.job(job).state == "queued"
    data = json.loads((runs / "queue.json").read_text())
    assert data["commands"] == [] and data["applied"] == data["seq"] == 3
    owner = queues(cpu_slots=1)
    wait(lambda: owner.job(job).state == "done", "the job to run, not to be cancelled")


def test_a_cancel_survives_a_shutdown_and_an_owner_killed_before_the_job_stopped(tiny_preset, queues, isolated):
    """Probe case 7: a cancel acknowledged, then SIGTERM to the owner: the job went back to queued."""
    runs = isolated / "runs"
    q = queues(cpu_slots=1)
    job = q.submit(tiny_preset, long(100000))
    wait(lambda: q.job(job).step >= 4, "training")
    q.cancel(job)
    q.shutdown()
    assert json.loads((runs / "queue.json").read_text())["jobs"][0]["state"] == "cancelled"
    # the owner killed after it took the cancel in but before the job stopped: the record says so
    edit_queue(runs, lambda d: d["jobs"][0].update(state="running", stopping="pause"))
    assert queues(cpu_slots=1).job(job).state == "paused"


def test_a_rejected_override_is_dropped_so_a_plain_resume_works(tiny_preset, queues):
    """Probe case 13: every later plain `queue resume` failed with the same error."""
    q = queues(cpu_slots=1)
    job = q.submit(tiny_preset, long(100000))
    wait(lambda: q.job(job).step >= 10, "training")
    q.pause(job)
    wait(lambda: q.job(job).state == "paused", "the pause")
    q.resume(job, ["model.hidden=[50]"])
    wait(lambda: q.job(job).state == "failed", "the rejected override")
    assert "do not fit this checkpoint" in q.job(job).error and "overrides were dropped" in q.job(job).error
    q.resume(job)
    wait(lambda: q.job(job).state == "running" and q.job(job).step > 10, "the plain resume")
    q.cancel(job)


def test_jobs_follow_a_renamed_runs_folder(tiny_preset, isolated):
    """Probe case 15: queue paths were absolute, so `queue work --runs NEW` refused the jobs."""
    old, new = isolated / "runs", isolated / "moved"
    q = JobQueue(old, cpu_slots=1)
    first = q.submit(tiny_preset, long(10))
    wait(lambda: q.job(first).state == "done", "the first job")
    second = q.submit(tiny_preset, long(100000))
    wait(lambda: q.job(second).step >= 10, "the second job")
    q.pause(second)
    wait(lambda: q.job(second).state == "paused", "the pause")
    target = q.job(second).step + 10 - q.job(second).step % 2  # the pause lands wherever training was
    q.shutdown()
    assert json.loads((old / "queue.json").read_text())["jobs"][0]["run_dir"] == Path(q.job(first).run_dir).name
    old.rename(new)
    q = JobQueue(new, cpu_slots=1)
    try:
        assert Path(q.job(first).run_dir).parent == new.resolve()
        q.resume(second, [f"train.max_steps={target}"])
        wait(lambda: q.job(second).state == "done", f"the resumed job at the new place ({q.job(second)})")
        assert train_steps(q.job(second).run_dir) == list(range(2, target + 1, 2))
    finally:
        q.shutdown()


def test_a_runs_folder_renamed_under_its_owner_carries_its_jobs_on(tiny_preset, isolated):
    old, new = isolated / "runs", isolated / "moved"
    q = JobQueue(old, cpu_slots=1)
    try:
        job = q.submit(tiny_preset, long(400))
        wait(lambda: q.job(job).step >= 20, "training")
        old.rename(new)
        wait(lambda: q.job(job).state == "done", f"the job to finish at the new place ({q.job(job)})", timeout=240)
        assert q.path == new.resolve() / "queue.json" and Path(q.job(job).run_dir).parent == new.resolve()
        assert train_steps(q.job(job).run_dir) == list(range(2, 401, 2)), "each step once"
    finally:
        q.shutdown()


def test_an_owner_that_cannot_write_queue_json_says_so_and_advises_the_queue(tiny_preset, queues, isolated, monkeypatch):
    """Probe case 16: the disk filled; the owner exited saying "queue: 1 running" and advised
    genwb run --resume instead of genwb queue resume."""
    import workbench.train
    import workbench.runs
    from workbench import queuefile

    q = queues(cpu_slots=1)
    real = workbench.runs.atomic_write_bytes

    def full(path, data, durable=True):
        if Path(path).suffix == ".pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, durable)

    monkeypatch.setattr(workbench.runs, "atomic_write_bytes", full)
    job = q.submit(tiny_preset, long(40))
    wait(lambda: q.job(job).state == "failed", "the failed checkpoint write")
    assert f"genwb queue resume {job} --runs" in q.job(job).error and "genwb run --resume" not in q.job(job).error

    def no_queue_file(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(queuefile, "atomic_write_text", no_queue_file)
    q.shutdown()
    assert [j.state for j in q.final_jobs] == ["failed"] and "no space left" in q.write_error.lower()


def test_a_symlinked_lock_or_queue_file_is_never_written_through(tiny_preset, isolated):
    """Probe case 10: the owner truncated the target of a queue.lock symlink."""
    runs = isolated / "runs"
    runs.mkdir()
    target = isolated / "precious"
    target.write_text("keep me")
    (runs / LOCK_FILE).symlink_to(target)
    out = CliRunner().invoke(main, ["queue", "work", "--runs", str(runs)])
    assert out.exit_code == 2 and "symbolic link" in out.stderr, out.output
    (runs / LOCK_FILE).unlink()
    (runs / "queue.json").symlink_to(target)
    out = CliRunner().invoke(main, ["queue", "list", "--runs", str(runs)])
    assert out.exit_code == 2 and "queue.json" in out.stderr, out.output
    assert target.read_text() == "keep me"


def test_the_queue_and_the_run_folder_never_disagree(tiny_preset, queues):
    """Probe case 20: a job the queue lists as cancelled kept status.json "paused"."""
    from workbench.runs import open_run

    q = queues(cpu_slots=1)
    job = q.submit(tiny_preset, long(100000))
    wait(lambda: q.job(job).step >= 10, "training")
    q.pause(job)
    wait(lambda: q.job(job).state == "paused", "the pause")
    run = open_run(q.job(job).run_dir)
    assert run.status()["state"] == "paused"
    q.cancel(job)
    assert run.status()["state"] == "cancelled"
    q.shutdown()
    client = queues(work=False)
    client.resume(job)  # no owner: applied at once, and the run folder says so
    assert run.status()["state"] == "queued" and client.job(job).state == "queued"


def test_queue_commands_answer_from_the_file_without_torch(tiny_preset, isolated):
    """Issue 16 item 6: list, cancel, pause, resume and adding a run folder are file operations: no torch import."""
    from workbench.config import load_config
    from workbench.runs import Run

    runs = isolated / "runs"
    JobQueue(runs, work=False).submit(tiny_preset, long(4))
    run = Run.create(load_config(tiny_preset), isolated / "other")
    code = ("import sys\nfrom workbench.cli import main\n"
            f"for args in (['queue', 'list'], ['queue', 'pause', 'j1'], ['queue', 'resume', 'j1'], ['queue', 'cancel', 'j1'],"
            f" ['queue', 'add', {str(run.path)!r}]):\n"
            f"    try:\n        main([*args, '--runs', {str(runs)!r}])\n    except SystemExit as e:\n        assert not e.code, e.code\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "TORCH False" in out.stdout, out.stdout + out.stderr
