"""The job queue's overhead per training step (events, bookkeeping, history, queue.json) against
a bare Trainer (in a thread, like the queue's workers), on the MADE preset with fewer steps. Runs alternate (bare, queued, bare, ...) so
that a change in the machine's load hits both alike; the figure is the difference of the medians,
per step, as a share of the bare Trainer's time per step. The queue's synchronous work per
event is also timed on its own, which load hardly disturbs.

    python benchmarks/bench_queue.py [--quick] [--steps N] [--repeats R]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import arguments, machine, parse, save, table  # noqa: E402
from workbench import events as ev  # noqa: E402
from workbench.config import load_config  # noqa: E402
from workbench.jobs import JobChanged, JobQueue  # noqa: E402
from workbench.jobstate import Job  # noqa: E402
from workbench.runs import Run  # noqa: E402
from workbench.train import Trainer  # noqa: E402

PRESET = Path(__file__).resolve().parents[1] / "presets" / "made.toml"


DEVICE = "cpu"


def overrides(steps: int, threads: int) -> list[str]:
    # The end of a run (validation, samples, test) is the same for both sides and not per step: kept small.
    return [f"train.max_steps={steps}", f"run.threads={threads}", f"run.device={DEVICE}", "train.val_batches=1",
            "sample.every=0", "sample.n=1", "eval.test=false", "train.checkpoint_every=0"]


def bare(steps: int, threads: int, out: Path) -> float:
    """A Trainer in a thread of its own, as the queue's worker runs it: on a machine with more
    runnable threads than cores, OpenMP in the main thread can be several times slower than in
    another thread, which would say nothing about the queue."""
    config = load_config(PRESET, overrides(steps, threads))
    start = time.perf_counter()
    run = Run.create(config, out)
    worker = threading.Thread(target=Trainer(config, run).fit)
    worker.start()
    worker.join()
    return time.perf_counter() - start


def queued(steps: int, threads: int, out: Path) -> float:
    q = JobQueue(out, cpu_slots=1) if DEVICE == "cpu" else JobQueue(out, slots=[DEVICE])
    done = threading.Event()
    q.subscribe(lambda job_id, e: done.set() if isinstance(e, JobChanged) and e.info.state in ("done", "failed") else None)
    q.subscribe(lambda job_id, e: None)  # a second subscriber, as the app and a log would be
    start = time.perf_counter()
    job = q.submit(PRESET, overrides(steps, threads))
    done.wait()
    seconds = time.perf_counter() - start
    assert q.job(job).state == "done", q.job(job).error
    q.shutdown()
    return seconds


def event_cost(n: int = 20000) -> float:
    """Seconds of the queue's synchronous work per Step event (what a training thread pays)."""
    with tempfile.TemporaryDirectory() as tmp:
        q = JobQueue(tmp, work=False)
        q.subscribe(lambda job_id, e: None)
        job = Job(id="j1", kind="train", name="x", model="made", dataset="d", preset="", overrides=[], config="")
        from workbench.history import History

        job.history = History()
        run = Run(Path(tmp), None)
        metrics = {"loss": 1.0, "nll": 1.0}
        events = [ev.Step(i, n, 0, metrics, 1e-3, 1000.0) for i in range(1, n + 1)]
        start = time.perf_counter()
        for event in events:
            q.on_event(job, run, event)
        seconds = (time.perf_counter() - start) / n
        q.shutdown()
    return seconds


def main() -> None:
    parser = arguments(__doc__, "200 steps, 2 repeats")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    args = parse(parser)
    global DEVICE
    DEVICE = args.device
    steps, repeats = (200, 2) if args.quick else (args.steps, args.repeats)
    threads = args.threads or 2
    torch.set_num_threads(threads)
    times = {"bare": [], "queue": []}
    with tempfile.TemporaryDirectory() as tmp:
        bare(20, threads, Path(tmp) / "warmup")  # data into the page cache, lazy imports done
        for r in range(repeats):
            times["bare"].append(bare(steps, threads, Path(tmp) / f"bare{r}"))
            times["queue"].append(queued(steps, threads, Path(tmp) / f"queue{r}"))
            print(f"repeat {r + 1}/{repeats}: bare {times['bare'][-1]:.2f} s, queue {times['queue'][-1]:.2f} s", flush=True)
    b, q = statistics.median(times["bare"]), statistics.median(times["queue"])
    per_step = (q - b) / steps
    share = (q - b) / b
    cost = event_cost()
    log_every = load_config(PRESET).train.log_every
    print(f"\nmachine: {machine()}; MADE preset on {DEVICE}, {steps} steps, run.threads={threads}, {repeats} interleaved repeats\n")
    print(table(["", "median wall time", "per step"], [
        ["bare Trainer", f"{b:.2f} s", f"{1e3 * b / steps:.2f} ms"],
        ["queue job", f"{q:.2f} s", f"{1e3 * q / steps:.2f} ms"],
        ["overhead", f"{q - b:+.2f} s ({100 * share:+.1f} %)", f"{1e3 * per_step:+.3f} ms"],
        ["queue work per Step event (synchronous)", f"{1e6 * cost:.1f} µs",
         f"{1e6 * cost / log_every:.2f} µs per step at log_every={log_every} ({100 * cost / log_every / (b / steps):.3f} %)"],
    ]))
    verdict = "within" if share <= 0.02 else "ABOVE"
    print(f"\nqueue overhead {100 * share:+.2f} % of the bare Trainer's time: {verdict} the 2 % budget")
    path = save("queue" if DEVICE == "cpu" else "queue-cuda", {"preset": "presets/made.toml", "device": DEVICE, "steps": steps, "threads": threads, "repeats": repeats,
                          "bare_s": times["bare"], "queue_s": times["queue"], "overhead_share": share,
                          "overhead_per_step_ms": 1e3 * per_step, "event_cost_us": 1e6 * cost, "log_every": log_every})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
