"""MADE: training throughput (images/s and share of the matmul roofline) and sampling time.

    python benchmarks/bench_made.py [--quick]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402
from benchmarks.common import arguments, machine, matmul_flops, parse, save, table, timed  # noqa: E402


def train_step_fn(model, batch):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.bernoulli(torch.full((batch, 1, 28, 28), 0.3))

    def step():
        opt.zero_grad(set_to_none=True)
        model.loss(x)["loss"].backward()
        opt.step()

    return step


def main() -> None:
    args = parse(arguments(__doc__, "fewer repeats, 16 samples"))
    torch.manual_seed(0)
    peak = matmul_flops()
    rows, results = [], {"matmul_gflops": peak / 1e9, "train": [], "sample": []}
    for hidden, batch in [([500], 100), ([500], 1000), ([1000, 1000], 100)]:
        model = models.build("made", (1, 28, 28), hidden=hidden)
        sizes = [784, *hidden, 784]
        flops_per_image = 3 * 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))  # forward + backward
        seconds = timed(train_step_fn(model, batch), repeats=5 if args.quick else 20, warmup=3)
        ips = batch / seconds
        share = ips * flops_per_image / peak
        results["train"].append({"hidden": hidden, "batch": batch, "images_per_s": ips, "roofline_share": share})
        rows.append([f"MADE {hidden}, batch {batch}", f"{ips:,.0f} img/s", f"{100 * share:.0f} %"])
    print(f"machine: {machine()}; float32 matmul {peak / 1e9:.0f} GFLOP/s\n")
    print(table(["training", "throughput", "of matmul roofline"], rows))
    model = models.build("made", (1, 28, 28), hidden=[500]).eval()
    n = 16 if args.quick else 64
    seconds = timed(lambda: model.sample(n), repeats=1 if args.quick else 3, warmup=0)
    results["sample"].append({"n": n, "seconds": seconds})
    print()
    print(table(["sampling", "time"], [[f"MADE [500], {n} images (784 passes)", f"{seconds:.2f} s"]]))
    print(f"\nwritten to {save('made', results)}")


if __name__ == "__main__":
    main()
