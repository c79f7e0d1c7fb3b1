"""A queue with fixed jobs for the app's tests: no threads, no timings, every command recorded.
It speaks JobQueue's interface (workbench.jobs), so the app cannot tell the difference."""
from __future__ import annotations

import dataclasses
import threading
import time

from workbench.jobs import JobInfo


def job_info(id, state="queued", *, kind="train", name="tiny", model="made", dataset="fashion-mnist", device="cpu",
             step=0, total=24, loss=None, images_per_s=None, eta_s=None, run_dir=None, error=None, after=None,
             preset="presets/made.toml", overrides=(), progress=0.0) -> JobInfo:
    return JobInfo(id=id, kind=kind, name=name, model=model, dataset=dataset, device=device, state=state, step=step,
                   total=total, loss=loss, images_per_s=images_per_s, eta_s=eta_s, run_dir=run_dir, error=error,
                   after=after, preset=preset, overrides=tuple(overrides), progress=progress)


class FixedQueue:
    def __init__(self, jobs=(), owner=True):
        self._jobs = list(jobs)
        self.owner = owner
        self.calls: list[tuple] = []
        self.subscribers = []
        self.closed = False

    # reading
    def jobs(self):
        return list(self._jobs)

    def job(self, job_id):
        return next(j for j in self._jobs if j.id == job_id)

    def history(self, job_id):
        return []

    def subscribe(self, callback):
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def set(self, job_id, **changes):
        """Change a job as a worker would, and tell the subscribers."""
        self._jobs = [dataclasses.replace(j, **changes) if j.id == job_id else j for j in self._jobs]
        for callback in list(self.subscribers):
            callback(job_id, "changed")

    # commands
    def _next_id(self):
        return f"j{len(self._jobs) + 1}"

    def submit(self, preset, overrides=(), after=None, name=None, device=None):
        self.calls.append(("submit", str(preset), tuple(overrides), after, device))
        job_id = self._next_id()
        self._jobs.append(job_info(job_id, "waiting" if after else "queued", after=after, preset=str(preset)))
        return job_id

    def submit_resume(self, run_dir, checkpoint="last"):
        self.calls.append(("submit_resume", str(run_dir)))
        job_id = self._next_id()
        self._jobs.append(job_info(job_id, run_dir=str(run_dir)))
        return job_id

    def submit_eval(self, run_dir, n=10000, extractor="classifier", batch_size=500):
        self.calls.append(("submit_eval", str(run_dir), n))
        job_id = self._next_id()
        self._jobs.append(job_info(job_id, kind="eval", name="eval", run_dir=str(run_dir), total=n))
        return job_id

    def cancel(self, job_id):
        self.calls.append(("cancel", job_id))
        self.set(job_id, state="cancelled")

    def pause(self, job_id):
        self.calls.append(("pause", job_id))
        self.set(job_id, state="paused")

    def resume(self, job_id):
        self.calls.append(("resume", job_id))
        self.set(job_id, state="queued")

    def move(self, job_id, position):
        self.calls.append(("move", job_id, position))
        job = self.job(job_id)
        self._jobs.remove(job)
        self._jobs.insert(position, job)

    def remove(self, job_id):
        self.calls.append(("remove", job_id))
        self._jobs = [j for j in self._jobs if j.id != job_id]

    def shutdown(self, wait=True, checkpoint=True):
        self.calls.append(("shutdown", wait, checkpoint))
        self.closed = True


def make_run(runs_dir, name, *, model="made", steps=24, state="finished", loss0=540.0, parts=(), recon=False,
             evaluation=None, binarize="dynamic", checkpoint=False):
    """A run folder with fixed content: config, metrics (train every 2 steps, val every 6),
    status, a 4x4 grid of 28x28 samples (and 8 reconstructions), optionally eval.json and a checkpoint file."""
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from workbench.config import parse_config, to_toml
    from tests.conftest import TINY_PRESET

    path = Path(runs_dir) / name
    (path / "samples").mkdir(parents=True)
    (path / "checkpoints").mkdir()
    config = parse_config(TINY_PRESET, "tiny.toml")
    config.run.name = name
    config.data.binarize = binarize
    config.train.max_steps = steps if state == "finished" else 24
    # The app reads config.toml without validating it, so another model's name is enough here.
    (path / "config.toml").write_text(to_toml(config).replace('name = "made"', f'name = "{model}"'))
    rows = []
    for step in range(2, steps + 1, 2):
        row = {"step": step, "epoch": 0, "split": "train", "loss": loss0 - 2.5 * step}
        for i, part in enumerate(parts):
            row[part] = (i + 1) * 10.0 + step * 0.5
        rows.append({**row, "lr": 0.003, "images_per_s": 100.0})
        if step % 6 == 0:
            rows.append({"step": step, "split": "val", "nll": loss0 - 3.0 * step, "bpd": (loss0 - 3.0 * step) / 543.4})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "status.json").write_text(json.dumps({"state": state, "step": steps, "error": None,
                                                  "updated": "2026-01-01T00:00:00"}))
    rng = np.random.default_rng(len(name))
    tiles = (rng.random((16, 28, 28)) > 0.5).astype(np.uint8) * 255

    def grid(images, per_row):  # as workbench.images.grid lays them out: 1-pixel grey lines
        rows = len(images) // per_row
        out = np.full((rows * 29 + 1, per_row * 29 + 1), 128, dtype=np.uint8)
        for i, image in enumerate(images):
            r, q = divmod(i, per_row)
            out[1 + r * 29: 29 + r * 29, 1 + q * 29: 29 + q * 29] = image
        return out

    Image.fromarray(grid(tiles, 4)).save(path / "samples" / f"step-{steps}.png")
    if recon:  # 8 originals over their 8 reconstructions, as the trainer writes them
        Image.fromarray(grid(np.concatenate([tiles[:8], 255 - tiles[:8]]), 8)).save(
            path / "samples" / f"recon-step-{steps}.png")
    if evaluation is not None:
        (path / "eval.json").write_text(json.dumps(evaluation))
    if checkpoint:
        (path / "checkpoints" / "last.pt").write_bytes(b"not a real checkpoint")
    return path


def classifier_eval(fid, is_mean=3.0, nll=None):
    record = {"extractor": "classifier", "extractor_label": "classifier (fashion-mnist, binary)",
              "fid": fid, "kid_mean": fid / 100, "kid_std": 0.01, "is_mean": is_mean, "is_std": 0.1,
              "precision": 0.5, "recall": 0.4, "n": 1000, "seed": 0}
    out = {"classifier": record}
    if nll is not None:
        out.update(test_nll=nll, test_bpd=nll / 543.4, likelihood="exact")
    return out


def count_reads(monkeypatch, module):
    """Patches ``module.open`` so that every read of a file it opens is recorded: returns the list
    of (bytes read, read on the main thread) that grows with each read."""
    reads: list[tuple[int, bool]] = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def seek(self, n):
            return self.f.seek(n)

        def read(self, n=-1):
            data = self.f.read(n)
            reads.append((len(data), threading.current_thread() is threading.main_thread()))
            return data

    monkeypatch.setattr(module, "open", lambda *a: Counting(real_open(*a)), raising=False)
    return reads


async def wait_for(pilot, condition, timeout: float = 60.0, step: float = 0.05) -> None:
    """Let the app run until ``condition()`` holds (workers and a real queue run in threads). The
    timeout is a deadline for a failure, never a wait: long, because the suite must pass on a
    2-core machine under load."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached in {timeout:.0f} s"
        await pilot.pause(step)
