"""Sampling time with and without CUDA graphs (models.cudagraph) for the models whose sampler
opts in, at the presets' sizes: 64 28x28 images (binarised; 256 levels for ``ar``) (untrained weights: the time does not
depend on them). Per model: the eager sampler, the first graph call (eager), the second (warm-up
and capture), the median of later replays, and whether the replays drew the eager images from
the same noise. On a CPU nothing is captured: the script only shows it runs (use --quick).

    python benchmarks/bench_sample_graphs.py            # on a GPU: writes results/sample_graphs.json
    python benchmarks/bench_sample_graphs.py --quick    # tiny shapes, a smoke test anywhere
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import models  # noqa: E402
from benchmarks.common import machine, save, table  # noqa: E402
from models.base import _sample_graphs  # noqa: E402

MODELS = [  # (label, model, levels, hyper-parameters): presets/*.toml sizes
    ("pixelcnn", "pixelcnn", 2, dict(hidden_channels=32, num_layers=5, head_channels=64)),
    ("gated pixelcnn", "pixelcnn", 2, dict(gated=True, hidden_channels=32, num_layers=4, head_channels=64)),
    ("row_lstm", "row_lstm", 2, dict(hidden=32, layers=4, head_channels=64)),
    ("diagonal_bilstm", "diagonal_bilstm", 2, dict(hidden=16, layers=3, head_channels=64)),
    ("ar (256 levels)", "ar", 256, dict(p=29)),
    ("fvsbn", "fvsbn", 2, {}),
    ("nade", "nade", 2, dict(hidden_units=250)),
]


def _time(fn) -> tuple[float, torch.Tensor]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8x8 images, 4 of them")
    parser.add_argument("--replays", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=None, help="labels of the models to time (default: all)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape, n = ((1, 8, 8), 4) if args.quick else ((1, 28, 28), 64)
    rows, out = [], []
    for label, name, levels, hparams in MODELS:
        if args.models is not None and label not in args.models:
            continue
        torch.manual_seed(0)
        model = models.build(name, shape, levels, None, **hparams).to(device).eval()
        noises = [torch.rand(n, *shape, device=device) for _ in range(2 + args.replays)]
        model.graph_sampling = False  # this instance only: the eager sampler
        eager_times, eager = zip(*[_time(lambda u=u: model.sample(n, noise=u)) for u in noises])
        del model.graph_sampling
        times, drawn = zip(*[_time(lambda u=u: model.sample(n, noise=u)) for u in noises])
        exact = all(torch.equal(a, b) for a, b in zip(drawn, eager))
        captured = bool(_sample_graphs(model).graphs)
        r = {"model": label, "images": n, "shape": list(shape), "eager_s": statistics.median(eager_times[1:]),
             "first_s": times[0], "capture_s": times[1], "replay_s": statistics.median(times[2:]),
             "captured": captured, "exact": exact}
        out.append(r)
        rows.append([label, f"{r['eager_s']:.3f}", f"{r['first_s']:.3f}", f"{r['capture_s']:.3f}",
                     f"{r['replay_s']:.3f}", f"{r['eager_s'] / r['replay_s']:.1f}x", captured, exact])
        print(rows[-1], flush=True)
    print(f"\n{machine()}; {n} images {shape}, seconds per call\n")
    print(table(["model", "eager", "graph 1st (eager)", "graph 2nd (capture)", "graph replay", "speed-up",
                 "captured", "same images"], rows))
    if os.environ.get("OUT"):  # the device machine's folder of results
        path = Path(os.environ["OUT"]) / "sample_graphs.json"
        path.write_text(json.dumps({"machine": machine(), "results": out}, indent=2) + "\n")
        print(f"\nwrote {path}")
    elif not args.quick and device == "cuda":
        print(f"\nwrote {save('sample_graphs', {'results': out})}")


if __name__ == "__main__":
    main()
