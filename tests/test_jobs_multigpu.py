"""The queue over several GPUs: the placement rule on fake GPU slots, CUDA_VISIBLE_DEVICES through
the parent's, a job asking for more GPUs than there are failing at once, ``[run] gpus`` in
``genwb run``, and a ``gpus = 2`` job run end to end as 2 gloo processes on CPU "GPU" slots."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import train_steps, wait
from workbench import placement
from workbench.config import load_config
from workbench.errors import UserError
from workbench.jobs import JobQueue
from workbench.jobstate import Job
from workbench.placement import Slot, place, visible_devices


needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@pytest.fixture
def two_gpu_queue(isolated, monkeypatch):
    """A queue whose two CPU slots stand in for GPUs: its 2-GPU jobs run as 2 gloo processes."""
    monkeypatch.setattr(placement, "is_gpu", lambda device: True)
    monkeypatch.setenv("GENWB_DDP_TIMEOUT", "30")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    q = JobQueue(isolated / "runs", slots=["cpu", "cpu"])
    try:
        yield q
    finally:
        q.shutdown()


def _job(id: str, gpus: int = 1, state: str = "queued", device: str | None = None) -> Job:
    return Job(id, "train", id, "made", "fashion-mnist", "p.toml", [], "", device=device, state=state, gpus=gpus)


def _gpus(n: int, cpu: int = 0) -> list[Slot]:
    return [Slot(i, f"cuda:{i}") for i in range(n)] + [Slot(n + i, "cpu") for i in range(cpu)]


def _start(slots, order, slot):
    """What ``slot`` starts now, with the slots marked taken the way the queue does."""
    job, taken = place(order, slot, slots, any(not s.gpu for s in slots), any(s.gpu for s in slots))
    for s in taken:
        s.job = job
    if job is not None and taken:
        job.active = True
    return job, taken


def test_a_two_gpu_job_waits_for_two_free_and_single_gpu_jobs_fill_the_rest():
    slots = _gpus(3)
    a, big, c, d = _job("a"), _job("big", gpus=2), _job("c"), _job("d")
    order = [a, big, c, d]
    assert _start(slots, order, slots[0]) == (a, [slots[0]])
    job, taken = _start(slots, order, slots[1])  # two free: big takes this slot and the next free one
    assert job is big and taken == [slots[1], slots[2]]
    assert _start(slots, order, slots[2]) == (None, [])  # reserved for big
    slots[0].job, a.active, a.state = None, False, "done"
    assert _start(slots, order, slots[0]) == (c, [slots[0]])  # single-GPU jobs fill the rest


def test_a_waiting_multi_gpu_job_first_in_line_is_not_starved():
    slots = _gpus(2, cpu=1)
    a, big, c, e = _job("a"), _job("big", gpus=2), _job("c"), _job("e", device="cpu")
    order = [a, big, c, e]
    assert _start(slots, order, slots[0])[0] is a
    assert _start(slots, order, slots[1]) == (None, [])  # c is behind big: the free GPU waits for big
    assert _start(slots, order, slots[2])[0] is e  # a CPU slot carries on
    slots[0].job, a.active, a.state = None, False, "done"
    job, taken = _start(slots, order, slots[0])
    assert job is big and taken == [slots[0], slots[1]]
    big.active, big.state = False, "done"
    for s in taken:
        s.job = None
    assert _start(slots, order, slots[1])[0] is c


def test_jobs_ahead_of_a_multi_gpu_job_run_first():
    slots = _gpus(2)
    a, b, big = _job("a"), _job("b"), _job("big", gpus=2)
    assert _start(slots, [a, b, big], slots[0])[0] is a
    assert _start(slots, [a, b, big], slots[1])[0] is b


def test_more_gpus_than_slots_is_refused_by_any_slot():
    slots = _gpus(1)
    four = _job("four", gpus=4)
    assert place([four], slots[0], slots, False, True) == (four, [])
    cpu_only = _gpus(0, cpu=1)
    assert place([_job("two", gpus=2)], cpu_only[0], cpu_only, True, False)[1] == []


def test_cuda_visible_devices_go_through_the_parents():
    assert visible_devices(["cuda:0", "cuda:2"], "3,5,7") == "3,7"
    assert visible_devices(["cuda:0", "cuda:2"], None) == "0,2"
    assert visible_devices(["cuda:1", "cuda:0"], " 4, 6 ") == "6,4"
    assert visible_devices(["cuda:1"], "") == "1"


def test_run_gpus_is_validated_and_defaults_to_one(tiny_preset):
    assert load_config(tiny_preset).run.gpus == 1
    assert load_config(tiny_preset, ["run.gpus=2"]).run.gpus == 2
    with pytest.raises(UserError, match="gpus"):
        load_config(tiny_preset, ["run.gpus=0"])


def test_a_job_asking_for_more_gpus_than_the_machine_has_fails_at_once(tiny_preset, isolated):
    q = JobQueue(isolated / "runs", cpu_slots=1)
    try:
        j = q.submit(tiny_preset, ["run.gpus=4"])
        after = q.submit(tiny_preset, ["train.max_steps=2", "train.val_every=0", "sample.every=0", "eval.test=false"])
        wait(lambda: q.job(j).state == "failed" and q.job(after).state == "done", "the 4-GPU job to fail")
        error = q.job(j).error
        assert error.startswith("needs 4 GPUs; this machine has 0 visible") and "\n" not in error
        assert q.job(j).run_dir is None  # nothing was started
    finally:
        q.shutdown()


@pytest.mark.slow
@needs_gloo
def test_a_two_gpu_job_runs_as_two_processes_and_single_jobs_wait(tiny_preset, two_gpu_queue):
    """CPU slots stand in for GPUs: the job runs through genwb run --nproc 2 (gloo), to done."""
    q = two_gpu_queue
    quiet = ["train.val_every=0", "sample.every=0", "eval.test=false", "train.checkpoint_every=6"]
    big = q.submit(tiny_preset, ["run.gpus=2", "train.max_steps=12", *quiet])
    single = q.submit(tiny_preset, ["train.max_steps=4", *quiet])
    seen = []
    q.subscribe(lambda j, e: seen.append(j) if type(e).__name__ == "Step" else None)
    wait(lambda: q.job(big).state == "running", "the 2-process job to start", timeout=30)
    assert q.job(big).device == "cpu,cpu" and q.job(single).state == "queued"  # both slots are its
    wait(lambda: q.job(big).state in ("done", "failed"), "the 2-process job", timeout=60)
    info = q.job(big)
    assert info.state == "done", info.error
    assert info.step == info.total == 12 and info.loss is not None and info.gpus == 2
    assert train_steps(info.run_dir) == list(range(2, 13, 2))  # every step logged once, by rank 0
    wait(lambda: q.job(single).state == "done", "the single job after it", timeout=30)
    assert big in seen
    assert q.history(big) and q.history(big)[-1]["step"] == 12


@pytest.mark.slow
@needs_gloo
def test_pausing_a_two_process_job_checkpoints_and_resume_carries_on(tiny_preset, two_gpu_queue):
    q = two_gpu_queue
    quiet = ["train.val_every=0", "sample.every=0", "eval.test=false", "train.checkpoint_every=1000"]
    big = q.submit(tiny_preset, ["run.gpus=2", "train.max_steps=3000", *quiet])
    wait(lambda: q.job(big).step >= 4, "the 2-process job to train", timeout=40)
    q.pause(big)
    wait(lambda: q.job(big).state != "running", "the pause", timeout=40)
    info = q.job(big)
    assert info.state == "paused", info.error
    run = Path(info.run_dir)
    assert (run / "checkpoints" / "last.pt").exists()
    assert json.loads((run / "status.json").read_text())["state"] == "paused"
    q.resume(big, [f"train.max_steps={info.step + 4}"])
    wait(lambda: q.job(big).state in ("done", "failed"), "the resumed job", timeout=60)
    info = q.job(big)
    assert info.state == "done", info.error
    steps = train_steps(info.run_dir)
    assert steps == sorted(set(steps)) and steps[-1] == info.total  # every step logged once


def test_genwb_run_takes_its_process_count_from_run_gpus_unless_nproc_is_given(tiny_preset, monkeypatch):
    from click.testing import CliRunner

    from workbench import cli, launch

    calls = []
    monkeypatch.setattr(launch, "launch", lambda nproc, *args: calls.append(nproc) or 0)
    runner = CliRunner()
    assert runner.invoke(cli.main, ["run", str(tiny_preset), "--set", "run.gpus=2"]).exit_code == 0
    assert runner.invoke(cli.main, ["run", str(tiny_preset), "--set", "run.gpus=2", "--nproc", "3"]).exit_code == 0
    assert calls == [2, 3]
