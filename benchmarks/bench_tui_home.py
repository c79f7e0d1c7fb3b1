"""The home screen's costs: start-up with 500 run folders, the split home's redraw cost, and the
frame time at 80x24 and 160x48. Run by benchmarks/bench_tui.py (--home-only for this part alone).

1. Start-up: `python -m workbench.cli --runs DIR` in a pseudo-terminal, DIR holding 500 run
   folders; seconds from the spawn to the first frame of the jobs screen (its title in the
   output), then `q`. Goal: under 2 s on a quiet 2-core machine.
2. Frame time: a full repaint of the split home (screen.refresh(layout=True) to the composed
   frame), headless, at 80x24 and 160x48. Median and p90 of N repaints.
3. Redraw cost: CPU time of the UI thread per second, with the split home's panes (curve,
   samples, log, meters at 2-4 Hz) and with the table alone (z), over the same interval.
"""
from __future__ import annotations

import asyncio
import json
import os
import pty
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_runs(runs: Path, n: int, rows: int = 60) -> list[Path]:
    """``n`` small finished run folders (config, metrics, status, a sample grid on the first two)."""
    import numpy as np
    from PIL import Image

    made = []
    for i in range(n):
        run = runs / f"made-{i:04d}-20261205-0000{i % 60:02d}"
        (run / "samples").mkdir(parents=True)
        (run / "config.toml").write_text(f'[run]\nname = "made-{i:04d}"\n[model]\nname = "made"\n'
                                         f'[data]\ndataset = "fashion-mnist"\n[train]\nmax_steps = {rows * 10}\n')
        with open(run / "metrics.jsonl", "w") as f:
            for s in range(1, rows + 1):
                f.write(json.dumps({"step": s * 10, "split": "train", "loss": 540 * (0.99 ** s) + 90}) + "\n")
        (run / "status.json").write_text(json.dumps({"state": "finished", "step": rows * 10}))
        if i < 2:
            grid = (np.random.default_rng(i).random((117, 117)) > 0.5).astype("uint8") * 255
            Image.fromarray(grid).save(run / "samples" / f"step-{rows * 10}.png")
        made.append(run)
    return made


def measure_startup(runs: Path, timeout: float = 120.0) -> dict:
    """Seconds from spawning `genwb --runs RUNS` in a pty to the jobs screen's first frame."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm-256color", TEXTUAL_ANIMATIONS="none")
    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "workbench.cli", "--runs", str(runs),
                                   "--image-protocol", "halfcell"], env)
    out = bytearray()
    shown = threading.Event()

    def read():
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            out.extend(data)
            if b"The queue is empty" in out or b"owner: this app" in out:
                shown.set()

    threading.Thread(target=read, daemon=True).start()
    ok = shown.wait(timeout)
    first_screen = time.perf_counter() - start
    os.write(fd, b"q")
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    os.close(fd)
    return {"first_screen_s": round(first_screen, 3) if ok else None, "exit_code": None if status is None else os.waitstatus_to_exitcode(status)}


class FakeQueue:
    """Two jobs on fixed run folders; what the app reads of a JobQueue."""

    owner = True

    def __init__(self, runs: list[Path]):
        from workbench.jobs import JobInfo

        self._jobs = [JobInfo(id=f"j{i + 1}", kind="train", name=r.name[:12], model="made", dataset="fashion-mnist",
                              device="cpu", state="running" if i == 0 else "done", step=600, total=600, loss=91.0,
                              images_per_s=4000.0, eta_s=30.0, run_dir=str(r), error=None, after=None,
                              preset="presets/made.toml", overrides=(), progress=0.0)
                      for i, r in enumerate(runs)]

    def jobs(self):
        return list(self._jobs)

    def subscribe(self, callback):
        return lambda: None

    def shutdown(self, wait=True, checkpoint=True):
        pass


async def measure_frames(runs: list[Path], size: tuple[int, int], repaints: int, idle_s: float) -> dict:
    from workbench.tui.app import create_app
    from workbench.tui.widgets.job_panes import JobPanes

    app = create_app(runs[0].parent, queue=FakeQueue(runs), image_protocol="halfcell")
    frames: list[float] = []
    async with app.run_test(size=size) as pilot:
        panes = app.screen.query_one(JobPanes)
        deadline = time.monotonic() + 60
        while not (panes.log_lines and panes.run_dir) and time.monotonic() < deadline:
            await pilot.pause(0.1)
        await pilot.pause(1.0)
        original = app._display
        composed = asyncio.Event()

        def display(screen, renderable):
            original(screen, renderable)
            if renderable is not None:
                composed.set()

        app._display = display
        for _ in range(repaints):
            composed.clear()
            t0 = time.perf_counter()
            app.screen.refresh(layout=True)
            await asyncio.wait_for(composed.wait(), 10)
            frames.append((time.perf_counter() - t0) * 1000)
            await pilot.pause(0.05)
        app._display = original
        cost = {}
        for mode in ("split home", "table only"):
            if mode == "table only":
                await pilot.press("z")
                await pilot.pause(0.5)
            c0, w0 = time.thread_time(), time.perf_counter()
            await asyncio.sleep(idle_s)
            cost[mode] = round((time.thread_time() - c0) / (time.perf_counter() - w0) * 1000, 1)
    return {"size": f"{size[0]}x{size[1]}", "repaints": repaints,
            "frame_median_ms": round(statistics.median(frames), 1),
            "frame_p90_ms": round(sorted(frames)[int(0.9 * (len(frames) - 1))], 1),
            "ui_cpu_ms_per_s": cost}


def run(quick: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-home-") as tmp:
        runs = Path(tmp) / "runs"
        folders = make_runs(runs, 500)
        startup = measure_startup(runs)
        repaints, idle = (10, 3.0) if quick else (30, 10.0)
        frames = [asyncio.run(measure_frames(folders[:2], size, repaints, idle)) for size in ((80, 24), (160, 48))]
    return {"startup_500_runs": startup, "frames": frames}


def report(result: dict) -> None:
    s = result["startup_500_runs"]
    print(f"start-up with 500 run folders: first screen after {s['first_screen_s']} s (exit code {s['exit_code']}; goal < 2 s)")
    print(f"{'size':8} {'frame median ms':>16} {'p90 ms':>8} {'UI CPU ms/s split':>18} {'table only':>11}")
    for f in result["frames"]:
        print(f"{f['size']:8} {f['frame_median_ms']:16.1f} {f['frame_p90_ms']:8.1f} "
              f"{f['ui_cpu_ms_per_s']['split home']:18.1f} {f['ui_cpu_ms_per_s']['table only']:11.1f}")


if __name__ == "__main__":
    report(run(quick="--quick" in sys.argv))
