"""MADE: training throughput (images/s and share of the matmul roofline) and sampling time.

    python benchmarks/bench_made.py [--quick] [--threads N]

The roofline is measured, not assumed, and measured alongside the model: within each repeat the
training step, a 2048 x 2048 matmul and the step's own dense work (each layer's forward matmul,
its weight-gradient matmul and, above the first layer, its input-gradient matmul, as plain
matmuls on tensors of the same shapes) are timed in turn, and each reports the best of its
repeats. The roofline is the faster of the two references, in FLOP/s; the step's FLOPs count the
same matmuls. A step cannot run its own matmuls faster than they run alone, so the share stays
at or under 100 % (up to timing noise, which the best-of-repeats keeps small).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402
from benchmarks.common import arguments, machine, parse, save, table, timed  # noqa: E402


def train_step_fn(model, batch):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.bernoulli(torch.full((batch, 1, 28, 28), 0.3))

    def step():
        opt.zero_grad(set_to_none=True)
        model.loss(x)["loss"].backward()
        opt.step()

    return step


def dense_work(model, batch):
    """The training step's matmuls alone, and their FLOPs: forward and weight gradient for every
    layer, input gradient for every layer but the first (the data needs no gradient)."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    mats = [(torch.randn(batch, l.in_features), l.weight.detach().clone(), torch.randn(batch, l.out_features)) for l in layers]
    flops = 0
    for i, (x, w, g) in enumerate(mats):
        flops += 2 * batch * w.numel() * (3 if i > 0 else 2)

    def run():
        for i, (x, w, g) in enumerate(mats):
            x @ w.T
            g.T @ x
            if i > 0:
                g @ w

    return run, flops


def square_matmul(n: int = 2048):
    a, b = torch.randn(n, n), torch.randn(n, n)
    return (lambda: a @ b), 2 * n**3


def best_of_interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Best wall time of each function, timed in turn within every repeat."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def main() -> None:
    args = parse(arguments(__doc__, "fewer repeats, 16 samples"))
    torch.manual_seed(0)
    repeats = 5 if args.quick else 20
    square, square_flops = square_matmul()
    rows, results = [], {"statistic": f"best of {repeats} interleaved repeats", "train": [], "sample": []}
    peak_seen = 0.0
    for hidden, batch in [([500], 100), ([500], 1000), ([1000, 1000], 100)]:
        model = models.build("made", (1, 28, 28), hidden=hidden)
        own, flops = dense_work(model, batch)
        best = best_of_interleaved({"step": train_step_fn(model, batch), "square": square, "own": own}, repeats)
        square_rate, own_rate = square_flops / best["square"], flops / best["own"]
        roofline = max(square_rate, own_rate)
        peak_seen = max(peak_seen, square_rate)
        ips = batch / best["step"]
        share = flops / best["step"] / roofline
        results["train"].append({"hidden": hidden, "batch": batch, "images_per_s": ips, "step_gflops": flops / best["step"] / 1e9,
                                 "matmul_2048_gflops": square_rate / 1e9, "own_matmuls_gflops": own_rate / 1e9,
                                 "roofline_share": share})
        rows.append([f"MADE {hidden}, batch {batch}", f"{ips:,.0f} img/s", f"{flops / best['step'] / 1e9:.0f}",
                     f"{square_rate / 1e9:.0f}", f"{own_rate / 1e9:.0f}", f"{100 * share:.0f} %"])
    results["matmul_gflops"] = peak_seen / 1e9
    print(f"machine: {machine()}; float32 GFLOP/s, best of {repeats} interleaved repeats\n")
    print(table(["training", "throughput", "step GFLOP/s", "2048² matmul", "the step's matmuls alone", "of roofline"], rows))
    model = models.build("made", (1, 28, 28), hidden=[500]).eval()
    n = 16 if args.quick else 64
    seconds = timed(lambda: model.sample(n), repeats=1 if args.quick else 3, warmup=0)
    results["sample"].append({"n": n, "seconds": seconds})
    print()
    print(table(["sampling", "time"], [[f"MADE [500], {n} images (784 passes)", f"{seconds:.2f} s"]]))
    if not args.quick:
        print(f"\nwritten to {save('made', results)}")


if __name__ == "__main__":
    main()
