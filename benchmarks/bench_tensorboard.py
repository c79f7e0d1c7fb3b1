"""What ``[log] tensorboard = true`` costs a training run: the MADE preset for a few hundred steps
with and without the TensorBoard writer (checkpoints, validation and sample grids on, so the
writer's fsync and images count), runs alternating (off, on, off, ...) so that a change in the
machine's load hits both alike; the figure is the difference of the medians as a share of the
run without. The writer's synchronous work per Step event is also timed on its own (what a
training thread pays at each logged row), which load hardly disturbs. The load average is
recorded before and after.

    python benchmarks/bench_tensorboard.py [--quick] [--steps N] [--repeats R]
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import arguments, machine, parse, save, table  # noqa: E402
from workbench import events as ev  # noqa: E402
from workbench.config import load_config  # noqa: E402
from workbench.runs import Run  # noqa: E402
from workbench.train import Trainer  # noqa: E402

PRESET = Path(__file__).resolve().parents[1] / "presets" / "made.toml"


def overrides(steps: int, threads: int, tensorboard: bool) -> list[str]:
    every = max(1, steps // 4)
    return [f"train.max_steps={steps}", f"run.threads={threads}", "run.device=cpu", "train.val_batches=1",
            f"train.val_every={every}", f"train.checkpoint_every={every}", f"sample.every={2 * every}", "sample.n=16",
            "eval.test=false", f"log.tensorboard={'true' if tensorboard else 'false'}"]


def train(steps: int, threads: int, tensorboard: bool, out: Path) -> float:
    config = load_config(PRESET, overrides(steps, threads, tensorboard))
    start = time.perf_counter()
    run = Run.create(config, out)
    Trainer(config, run).fit()
    seconds = time.perf_counter() - start
    assert any(run.path.glob("events.out.tfevents.*")) == tensorboard
    return seconds


def event_cost(n: int = 20000) -> float:
    """Seconds of the writer's work per Step event (one row: loss, nll, epoch, lr, images/s)."""
    from workbench.tensorboard import EventWriter

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(PRESET)
        run = Run.create(config, tmp)
        writer = EventWriter(run.path)
        writer(ev.Started(run.path, 0, n, 1, "cpu"))
        events = [ev.Step(i, n, 0, {"loss": 90.0 + 1 / i, "nll": 90.0 + 1 / i}, 1e-3, 8000.0) for i in range(1, n + 1)]
        start = time.perf_counter()
        for event in events:
            writer(event)
        seconds = (time.perf_counter() - start) / n
        writer.close()
    return seconds


def main() -> None:
    parser = arguments(__doc__, "200 steps, 2 repeats")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parse(parser)
    steps, repeats = (200, 2) if args.quick else (args.steps, args.repeats)
    threads = args.threads or 2
    torch.set_num_threads(threads)
    cost = event_cost()  # first: it takes a second, and load hardly disturbs it
    print(f"writer's synchronous work per Step event: {1e6 * cost:.1f} µs", flush=True)
    load_before = os.getloadavg()
    times = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        train(20, threads, True, Path(tmp) / "warmup")  # data into the page cache, lazy imports done
        for r in range(repeats):
            for tensorboard in (False, True):
                times[tensorboard].append(train(steps, threads, tensorboard, Path(tmp) / f"{r}-{tensorboard}"))
            print(f"repeat {r + 1}/{repeats}: without {times[False][-1]:.2f} s, with {times[True][-1]:.2f} s", flush=True)
    load_after = os.getloadavg()
    off, on = statistics.median(times[False]), statistics.median(times[True])
    share = (on - off) / off
    log_every = load_config(PRESET).train.log_every
    load = f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    print(f"\nmachine: {machine()}; MADE preset on cpu, {steps} steps, run.threads={threads}, {repeats} interleaved "
          f"repeats; {load}\n")
    print(table(["", "median wall time", "per step"], [
        ["without", f"{off:.2f} s", f"{1e3 * off / steps:.2f} ms"],
        ["[log] tensorboard = true", f"{on:.2f} s", f"{1e3 * on / steps:.2f} ms"],
        ["overhead", f"{on - off:+.2f} s ({100 * share:+.1f} %)", f"{1e3 * (on - off) / steps:+.3f} ms"],
        ["writer's work per Step event (synchronous)", f"{1e6 * cost:.1f} µs",
         f"{1e6 * cost / log_every:.2f} µs per step at log_every={log_every} ({100 * cost / log_every / (off / steps):.3f} %)"],
    ]))
    path = save("tensorboard", {"preset": "presets/made.toml", "device": "cpu", "steps": steps, "threads": threads,
                                "repeats": repeats, "without_s": times[False], "with_s": times[True],
                                "overhead_share": share, "event_cost_us": 1e6 * cost, "log_every": log_every,
                                "load_average_before": load_before, "load_average_after": load_after})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
