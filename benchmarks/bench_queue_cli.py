"""How long ``genwb queue`` commands take, each a fresh process as a user types it: add (a preset,
which validates the model and the dataset; a run folder, which is a file operation), list,
pause, resume and cancel, against two floors: a bare Python start and ``import torch``.
Commands run in turn, repeated, and the median is reported (the issue's target: under 2 s on a
quiet 2-core machine for add, list, cancel, pause and resume).

    python benchmarks/bench_queue_cli.py [--quick] [--repeats R]
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import arguments, parse, save, table  # noqa: E402

PRESET = ROOT / "presets" / "made.toml"


def main() -> None:
    parser = arguments(__doc__, "2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    args = parse(parser)
    repeats = 2 if args.quick else args.repeats
    genwb = [sys.executable, "-m", "workbench.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        runs, other = Path(tmp) / "runs", Path(tmp) / "other"
        from workbench.config import load_config
        from workbench.runs import Run

        run = Run.create(load_config(PRESET), other).path  # a run folder to carry on (it never started)
        floors = {"python -c pass (floor)": [sys.executable, "-c", "pass"],
                  "import torch (floor)": [sys.executable, "-c", "import torch"]}
        times: dict[str, list[float]] = {}

        def timed(name: str, command: list[str]) -> str:
            start = time.perf_counter()
            out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
            times.setdefault(name, []).append(time.perf_counter() - start)
            return out.strip()

        for i in range(repeats):
            for name, command in floors.items():
                timed(name, command)
            job = timed("queue add PRESET", [*genwb, "queue", "add", str(PRESET), "--runs", str(runs)])
            if i == 0:  # once: the run is then in the queue
                timed("queue add RUN", [*genwb, "queue", "add", str(run), "--runs", str(runs)])
            timed("queue list", [*genwb, "queue", "list", "--runs", str(runs)])
            for op in ("pause", "resume", "cancel"):
                timed(f"queue {op}", [*genwb, "queue", op, job, "--runs", str(runs)])
    medians = {name: statistics.median(t) for name, t in times.items()}
    rows = [[name, f"{s:.2f} s"] for name, s in medians.items()]
    print(table(["command", f"median of {repeats}"], rows))
    print(f"wrote {save('queue_cli', {'repeats': repeats, 'seconds': medians})}")


if __name__ == "__main__":
    main()
