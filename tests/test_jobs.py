"""The job queue in one process: slots, cancel/pause/resume/move, dependencies, faults that fail
one job alone, the queue file shared with clients, bounded history and non-blocking events."""
from __future__ import annotations

import errno
import json
import os
import pickle
import threading
import time

import pytest
import torch

from tests.conftest import preset_text, train_steps, wait
from workbench import events as ev
from workbench.errors import UserError
from workbench.jobs import History, JobChanged, JobQueue
from workbench.runs import Run, open_run, safe_name

QUIET = ["train.val_every=0", "sample.every=0", "eval.test=false"]


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


def state(q: JobQueue, job_id: str) -> str:
    return q.job(job_id).state


def test_two_cpu_slots_run_at_once_and_names_stay_inside_runs(tiny_preset, queues, isolated):
    q = queues(cpu_slots=2)
    a = q.submit(tiny_preset, long(150), name="../../escape")
    b = q.submit(tiny_preset, [*long(150), "run.name=../x/../../y"])
    both = threading.Event()
    q.subscribe(lambda j, e: both.set() if isinstance(e, ev.Step) and all(i.state == "running" for i in q.jobs()) else None)
    wait(lambda: not q.busy(), "both jobs")
    assert both.is_set(), "the two jobs never ran at the same time"
    runs = (isolated / "runs").resolve()
    for job in (a, b):
        info = q.job(job)
        assert info.state == "done" and info.step == info.total == 150
        assert os.path.dirname(info.run_dir) == str(runs) and ".." not in info.run_dir
    assert q.job(a).name == "escape" and q.job(b).name == "x-y"
    assert [p.name for p in isolated.iterdir() if p.name.startswith(("escape", "x", "y"))] == []
    assert safe_name("../../etc/passwd") == "etc-passwd" and safe_name("..") == "run" and safe_name("a/b") == "a-b"


def test_one_slot_runs_jobs_in_queue_order(tiny_preset, queues):
    q = queues(cpu_slots=1)
    events = []
    q.subscribe(lambda j, e: events.append((j, e.info.state)) if isinstance(e, JobChanged) else None)
    a, b = q.submit(tiny_preset, QUIET), q.submit(tiny_preset, QUIET)
    wait(lambda: not q.busy(), "both jobs")
    kept = [e for e in events if e[1] in ("running", "done")]
    transitions = [e for k, e in enumerate(kept) if k == 0 or kept[k - 1] != e]
    assert transitions == [(a, "running"), (a, "done"), (b, "running"), (b, "done")]


def test_cancel_pause_resume_and_move(tiny_preset, queues):
    q = queues(cpu_slots=1)
    started = []
    q.subscribe(lambda j, e: started.append((j, e.step)) if isinstance(e, ev.Started) else None)
    a = q.submit(tiny_preset, long(300))
    b, c = q.submit(tiny_preset, QUIET), q.submit(tiny_preset, QUIET)
    wait(lambda: state(q, a) == "running", "a to run")
    q.cancel(b)  # queued: cancelled at once
    assert state(q, b) == "cancelled"
    q.move(c, 0)
    assert [i.id for i in q.jobs()] == [c, a, b]
    wait(lambda: q.job(a).step >= 10, "a to train")
    q.pause(a)
    wait(lambda: state(q, a) == "paused", "a to pause")
    run = open_run(q.job(a).run_dir)
    paused_at = run.load_checkpoint("last")["step"]
    assert run.status()["state"] == "paused" and run.status()["step"] == paused_at > 0
    wait(lambda: state(q, c) == "done", "c to run while a is paused")
    assert state(q, a) == "paused" and state(q, b) == "cancelled"
    with pytest.raises(UserError, match="only paused, failed or cancelled jobs resume"):
        q.resume(c)
    q.resume(a)
    wait(lambda: state(q, a) == "done", "a to finish")
    assert [s for j, s in started if j == a] == [0, paused_at], "resumed from its checkpoint, not from scratch"
    assert train_steps(run.path) == list(range(2, 301, 2)), "every step logged exactly once"

    # Cancelling takes effect within one training step.
    d = q.submit(tiny_preset, long(300))
    wait(lambda: q.job(d).step >= 4, "d to train")
    with pytest.raises(UserError, match="cancel it before removing"):
        q.remove(d)
    with pytest.raises(UserError, match="no job 'j999'"):
        q.pause("j999")
    job = q._jobs[d]
    at_cancel = []
    real_set = job.cancel.set
    job.cancel.set = lambda: (at_cancel.append(job.trainer.step), real_set())
    q.cancel(d)
    wait(lambda: state(q, d) == "cancelled", "d to stop")
    d_run = open_run(q.job(d).run_dir)
    stopped_at = d_run.load_checkpoint("last")["step"]
    assert stopped_at <= at_cancel[0] + 1 and d_run.status()["state"] == "cancelled"
    # ... and a cancelled run can come back as a job of its own, from its checkpoint.
    q.remove(d)
    assert d not in [i.id for i in q.jobs()]
    e = q.submit_resume(d_run.path)
    wait(lambda: state(q, e) == "done", "the resumed run")
    assert [s for j, s in started if j == e] == [stopped_at]
    assert train_steps(d_run.path) == list(range(2, 301, 2))


VQVAE = 'name = "vqvae"\nnum_codes = 8\ncode_dim = 4\nchannels = 16\nres_channels = 8\nres_blocks = 1'
PRIOR = ('name = "vqvae_prior"\nvqvae_run = "runs/nothing-yet"\nhidden_channels = 8\nnum_layers = 2\n'
         'head_channels = 16\nembed_dim = 4')
SHORT = ["train.max_steps=4", "train.val_every=0", "train.checkpoint_every=0", "sample.every=0", "eval.test=false"]


def test_a_prior_job_after_a_vqvae_job_uses_its_run(tiny_data, queues, isolated):
    (isolated / "vq.toml").write_text(preset_text(VQVAE, "vq"))
    (isolated / "prior.toml").write_text(preset_text(PRIOR, "prior"))
    q = queues(cpu_slots=2)  # two slots: the prior still waits for the VQ-VAE
    vq = q.submit(isolated / "vq.toml", SHORT)
    prior = q.submit(isolated / "prior.toml", SHORT, after=vq)
    assert state(q, prior) == "waiting" and q.job(prior).after == vq
    q.pause(prior)  # held back until its parent is done and gone from the list
    wait(lambda: state(q, vq) == "done", "the VQ-VAE")
    vq_run = q.job(vq).run_dir
    q.remove(vq)
    q.resume(prior)
    wait(lambda: not q.busy(), "the prior")
    assert state(q, prior) == "done", q.jobs()
    child = open_run(q.job(prior).run_dir)
    assert child.config.model.hparams["vqvae_run"] == vq_run
    assert open_run(vq_run).status()["state"] == "finished" and child.status()["state"] == "finished"


@pytest.fixture
def faults(monkeypatch):
    """Batch size picks the fault: 17 raises, 19 turns the loss NaN at the 9th step, 21 runs out of
    GPU memory; runs named diskfull* cannot write checkpoints after step 6."""
    from models.made import MADE

    real_loss, real_save = MADE.loss, Run.save_checkpoint

    def loss(self, x, y=None):
        n = x.shape[0]
        if n == 17:
            raise RuntimeError("boom")
        if n == 21:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        out = real_loss(self, x, y)
        self._calls = getattr(self, "_calls", 0) + 1
        if n == 19 and self._calls >= 9:
            out["loss"] = out["loss"] * float("nan")
        return out

    def save(self, which, state):
        if self.path.name.startswith("diskfull") and state["step"] > 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, which, state)

    monkeypatch.setattr(MADE, "loss", loss)
    monkeypatch.setattr(Run, "save_checkpoint", save)
    return lambda: (monkeypatch.setattr(MADE, "loss", real_loss), monkeypatch.setattr(Run, "save_checkpoint", real_save))


def test_each_fault_fails_its_job_alone(tiny_preset, queues, faults):
    q = queues(cpu_slots=2)
    steps = ["train.checkpoint_every=6", "train.val_every=0", "sample.every=0"]
    boom = q.submit(tiny_preset, [*steps, "data.batch_size=17"], name="boom")
    child = q.submit(tiny_preset, steps, after=boom, name="child")
    nan = q.submit(tiny_preset, [*steps, "data.batch_size=19"], name="nan")
    full = q.submit(tiny_preset, steps, name="diskfull")
    oom = q.submit(tiny_preset, [*steps, "data.batch_size=21"], name="oom")
    ok = q.submit(tiny_preset, steps, name="ok")
    wait(lambda: not q.busy(), "every job")
    info = {j.name: j for j in q.jobs()}
    assert info["ok"].state == "done" and info["ok"].step == 24
    assert {n: info[n].state for n in ("boom", "child", "nan", "diskfull", "oom")} == dict.fromkeys(
        ("boom", "child", "nan", "diskfull", "oom"), "failed")
    assert info["boom"].error == "RuntimeError: boom"
    assert info["child"].error.startswith(f"job {boom} (boom), which this job runs after, failed: RuntimeError: boom")
    assert "loss became nan by step 10" in info["nan"].error and "\n" not in info["nan"].error
    assert "space" in info["diskfull"].error.lower()
    assert "batch_size=10" in info["oom"].error
    for name, good in (("nan", 6), ("diskfull", 6)):
        run = open_run(info[name].run_dir)
        assert run.status()["state"] == "failed" and run.load_checkpoint("last")["step"] == good
        assert not list(run.path.glob("checkpoints/*.tmp")) and not list(run.path.glob("checkpoints/.*"))
    # A failed job resumes from its last good checkpoint once the cause is gone.
    faults()
    started = []
    q.subscribe(lambda j, e: started.append(e.step) if isinstance(e, ev.Started) and j == nan else None)
    with pytest.raises(UserError, match="expected section.key=value"):
        q.resume(nan, ["lr=1"])
    q.resume(nan, ["train.lr=0.001"])  # the advice after a NaN: a lower learning rate
    wait(lambda: state(q, nan) == "done", "the NaN job, resumed")
    assert started == [6] and train_steps(info["nan"].run_dir) == list(range(2, 25, 2))
    assert open_run(info["nan"].run_dir).config.train.lr == 0.001 and q.job(nan).overrides[-1] == "train.lr=0.001"


def test_a_malicious_checkpoint_is_refused(tiny_preset, queues, isolated):
    q = queues(cpu_slots=1)
    job = q.submit(tiny_preset, long(300))
    wait(lambda: q.job(job).step >= 10, "the job to train")
    q.pause(job)
    wait(lambda: state(q, job) == "paused", "the pause")
    marker = isolated / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run = open_run(q.job(job).run_dir)
    run.checkpoint_path("last").write_bytes(pickle.dumps({"model": Evil(), "step": 10}))
    q.resume(job)
    wait(lambda: state(q, job) == "failed", "the refusal")
    assert not marker.exists(), "the pickle ran code"
    error = q.job(job).error
    assert str(run.checkpoint_path("last")) in error and "\n" not in error


def test_concurrent_submits_lose_no_job(tiny_preset, queues):
    clients = [queues(work=False), queues(work=False)]
    ids, errors = [], []

    def submit(k):
        try:
            for _ in range(4):
                ids.append(clients[k % 2].submit(tiny_preset))
        except Exception as e:  # pragma: no cover - shown by the assertion
            errors.append(e)

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ids) == len(set(ids)) == 24
    saved = json.loads(clients[0].path.read_text())
    assert sorted(j["id"] for j in saved["jobs"]) == sorted(ids) and saved["next_id"] == 25
    assert all(i.state == "queued" for i in clients[1].jobs())


def test_concurrent_client_submits_reach_a_working_owner(tiny_preset, queues):
    owner = queues(cpu_slots=1)
    parent = owner.submit(tiny_preset)
    owner.pause(parent)  # held back: the jobs after it wait, so nothing runs
    clients = [queues(work=False) for _ in range(3)]
    ids = []
    threads = [threading.Thread(target=lambda c=c: ids.extend(c.submit(tiny_preset, after=parent) for _ in range(4)))
               for c in clients for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 24
    wait(lambda: {i.id for i in owner.jobs()} == {parent, *ids}, "the owner to take in every job")
    assert all(owner.job(i).state == "waiting" for i in ids)
    saved = json.loads(owner.path.read_text())
    assert {j["id"] for j in saved["jobs"]} == {parent, *ids} and saved["commands"] == []


def test_a_client_adds_and_cancels_jobs_while_the_owner_works(tiny_preset, queues):
    owner = queues(cpu_slots=1)
    client = queues(work=False)
    assert owner.owner and not client.owner and client.owner_info()["pid"] == os.getpid()
    seen = []
    client.subscribe(lambda j, e: seen.append((j, type(e).__name__)))
    long_job = owner.submit(tiny_preset, long(3000))
    results = {}

    def drive():
        results["added"] = client.submit(tiny_preset, QUIET, name="from-client")
        wait(lambda: client.job(long_job).state == "running" and client.job(long_job).step >= 6, "the client to see progress")
        results["live"] = client.job(long_job)
        results["history"] = client.history(long_job)
        client.cancel(long_job)

    t = threading.Thread(target=drive)
    t.start()
    t.join(timeout=120)
    wait(lambda: state(owner, long_job) == "cancelled", "the client's cancel")
    added = results["added"]
    wait(lambda: state(owner, added) == "done", "the client's job")
    assert client.job(added).state == "done" and client.job(added).name == "from-client"
    live = results["live"]
    assert live.loss is not None and live.step >= 6 and live.images_per_s and live.run_dir
    assert results["history"] and results["history"][-1]["split"] == "train"
    wait(lambda: (added, "JobChanged") in seen and (long_job, "Step") in seen, "client events")
    with pytest.raises(UserError, match="no job 'j99'"):
        client.cancel("j99")


def test_a_waiting_client_takes_over_when_the_owner_leaves(tiny_preset, queues):
    first = queues(cpu_slots=1)
    second = queues(cpu_slots=1)  # work=True, but the queue has an owner: a client for now
    assert first.owner and not second.owner
    first.shutdown()
    wait(lambda: second.owner, "the takeover", timeout=10)
    job = second.submit(tiny_preset, QUIET)
    wait(lambda: state(second, job) == "done", "the new owner to run it")


def test_history_is_bounded_and_spans_the_whole_curve():
    h = History(capacity=100)
    for step in range(1, 100_001):
        h.add({"step": step, "split": "train", "loss": 1.0 / step})
        if step % 1000 == 0:
            h.add({"step": step, "split": "val", "nll": 1.0})
    rows = h.rows()
    train = [r["step"] for r in rows if r["split"] == "train"]
    assert len(rows) <= 2 * 101 and train[0] == 1 and train[-1] == 100_000
    gaps = {b - a for a, b in zip(train[:-2], train[1:-1])}
    assert len(gaps) == 1, "evenly thinned"
    assert [r["step"] for r in rows if r["split"] == "val"][-1] == 100_000


def test_a_slow_subscriber_loses_nothing_and_delays_nothing(tiny_preset, queues):
    q = queues(cpu_slots=1)
    release, got, quick = threading.Event(), [], []

    def stuck(job_id, event):  # blocks until the job is over
        release.wait()
        if isinstance(event, ev.Step):
            got.append(event)

    q.subscribe(stuck)
    q.subscribe(lambda j, e: quick.append(e) if isinstance(e, ev.Step) else None)
    job = q.submit(tiny_preset, long(100))
    wait(lambda: state(q, job) == "done", "the job, while a subscriber is stuck")
    wait(lambda: len(quick) == 50, "the other subscriber, while one is stuck", timeout=30)
    assert got == []
    release.set()
    wait(lambda: len(got) == 50, "every event", timeout=30)
    assert [e.step for e in got] == list(range(2, 101, 2))
    assert [r["step"] for r in q.history(job) if r["split"] == "train"] == list(range(2, 101, 2))


def test_evaluation_jobs(tiny_preset, queues, monkeypatch):
    import workbench.evaluate

    calls, progress = [], []

    def fake(run_dir, n, extractor, batch_size, device, progress, on_progress):
        calls.append((run_dir, dict(n=n, extractor=extractor, batch_size=batch_size, device=device, progress=progress)))
        if n == 13:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        for k in range(1, 5):
            on_progress("sampling", k / 4)
        return {"fid": 12.5}

    monkeypatch.setattr(workbench.evaluate, "evaluate_run", fake)
    q = queues(cpu_slots=1)
    q.subscribe(lambda j, e: progress.append(e.info.progress) if isinstance(e, JobChanged) and e.info.kind == "eval" else None)
    train = q.submit(tiny_preset, QUIET)
    wait(lambda: state(q, train) == "done", "training")
    run_dir = q.job(train).run_dir
    good = q.submit_eval(run_dir, n=40, batch_size=20)
    bad = q.submit_eval(run_dir, n=13, extractor="inception", batch_size=20)
    wait(lambda: not q.busy(), "the evaluations")
    info = q.job(good)
    assert info.kind == "eval" and info.state == "done" and info.progress == 1.0 and info.loss == 12.5
    assert calls[0] == (run_dir, {"n": 40, "extractor": "classifier", "batch_size": 20, "device": "cpu", "progress": False})
    assert q.job(bad).state == "failed" and "smaller batch size" in q.job(bad).error
    wait(lambda: progress.count(1.0) >= 2, "the progress events")  # as it went, and done
    assert 0.25 in progress
    with pytest.raises(UserError, match="extractor"):
        q.submit_eval(run_dir, extractor="vgg")
    with pytest.raises(UserError, match="has finished"):
        q.submit_resume(run_dir)


def test_an_evaluation_stops_at_its_next_batch_when_cancelled_paused_or_shut_down(tiny_preset, queues, isolated,
                                                                                      monkeypatch):
    """An evaluation job is a job like the others: cancel and pause take effect at its next batch
    (here, in the classifier's first training, the phase that once could not stop), a paused one
    resumes, and a shutdown waits for it to stop, so that no worker thread is left inside native
    code when the process exits (the app aborted with "terminate called without an active
    exception" when it quit during an evaluation). The shut-down evaluation is cancelled, resumable."""
    import threading

    import workbench.evaluate

    calls: dict[int, int] = {}

    def fake(run_dir, n, extractor, batch_size, device, progress, on_progress):
        calls[n] = 0
        while True:  # a classifier that trains for ever, one batch at a time
            calls[n] += 1
            on_progress("training the classifier", min(calls[n] / 1000, 0.99))
            time.sleep(0.01)

    monkeypatch.setattr(workbench.evaluate, "evaluate_run", fake)
    q = queues(cpu_slots=1)
    train = q.submit(tiny_preset, QUIET)
    wait(lambda: state(q, train) == "done", "training")
    run_dir = q.job(train).run_dir
    job = q.submit_eval(run_dir, n=40)
    wait(lambda: calls.get(40, 0) > 3, f"the evaluation to run ({q.job(job)})")
    assert q.job(job).phase == "training the classifier"
    q.pause(job)
    wait(lambda: state(q, job) == "paused", f"the pause ({q.job(job)})")
    q.resume(job)
    wait(lambda: state(q, job) == "running" and q.job(job).phase, f"the resumed evaluation ({q.job(job)})")
    q.cancel(job)
    wait(lambda: state(q, job) == "cancelled", f"the cancel ({q.job(job)})")
    last = q.submit_eval(run_dir, n=99)
    wait(lambda: calls.get(99, 0) > 3, "the second evaluation")
    q.shutdown()
    assert not [t for t in threading.enumerate() if t.name.startswith("genwb-slot")], "a worker outlived the shutdown"
    records = {r["id"]: r for r in json.loads((isolated / "runs" / "queue.json").read_text())["jobs"]}
    assert records[last]["state"] == "cancelled"  # resumable: genwb queue resume starts it again
    assert records[job]["state"] == "cancelled"


def test_a_damaged_queue_file_is_reported_and_never_overwritten(tiny_preset, queues):
    client = queues(work=False)
    client.submit(tiny_preset)
    client.path.write_text("{not json")
    for action in (client.jobs, lambda: client.submit(tiny_preset), lambda: client.cancel("j1")):
        with pytest.raises(UserError, match="queue.json: not a queue file: bad JSON .*move it aside"):
            action()
    with pytest.raises(UserError, match="not a queue file"):
        JobQueue(client.runs_dir, cpu_slots=1)
    assert client.path.read_text() == "{not json" and client.owner_info() is None


def test_submit_resume_of_a_run_the_queue_holds_resumes_its_job(tiny_preset, queues):
    q = queues(cpu_slots=1)
    job = q.submit(tiny_preset, long(300))
    wait(lambda: q.job(job).step >= 4, "training")
    with pytest.raises(UserError, match="already in the queue as j1 \\(running\\)"):
        q.submit_resume(q.job(job).run_dir)
    q.pause(job)
    wait(lambda: state(q, job) == "paused", "the pause")
    client = queues(work=False)
    assert client.submit_resume(q.job(job).run_dir) == job  # through the owner, as a command
    wait(lambda: state(q, job) == "done", "the job to finish")
    assert len(q.jobs()) == 1


def test_history_from_disk_follows_a_growing_and_rewritten_metrics_file(tiny_preset, queues, isolated):
    q = queues(work=False)
    run = isolated / "run"
    run.mkdir()
    metrics = run / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "split": "train", "loss": 1.0}) + "\n" for s in (2, 4)))
    assert [r["step"] for r in q._histories.history(str(run)).rows()] == [2, 4]
    with open(metrics, "a") as f:
        f.write(json.dumps({"step": 6, "split": "train", "loss": 1.0}) + "\n" + '{"step": 8, "spl')  # a row being written
    assert [r["step"] for r in q._histories.history(str(run)).rows()] == [2, 4, 6]
    tmp = run / "new"
    tmp.write_text(json.dumps({"step": 2, "split": "train", "loss": 0.5}) + "\n")
    tmp.replace(metrics)  # a resume truncates the file by rewriting it
    assert q._histories.history(str(run)).rows() == [{"step": 2, "split": "train", "loss": 0.5}]
