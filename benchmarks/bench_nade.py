"""NADE training throughput on a CPU: the blocked cumulative sum (genwb's CPU default) against a
plain per-position loop and the one-shot (D, n, H) cumulative sum (genwb's GPU path), at batches
64, 128 and 256, binarised 28x28 images, one Adam step per timing.

    python benchmarks/bench_nade.py [--quick] [--threads N] [--hidden 250 500] [--repeats 10] [--name nade]

The three variants are timed in turn within each repeat (interleaved), and each reports the best
of its repeats, so that a load that comes and goes on a shared machine hits them alike. The
loop's log-likelihood is checked against genwb's before timing.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402
from benchmarks.common import arguments, machine, parse, save, table  # noqa: E402
from models.layers import discrete_log_prob  # noqa: E402


def loop_log_prob(model, x: torch.Tensor) -> torch.Tensor:
    """The per-position loop: a_{i+1} = a_i + W[:, i] x_i, one (n, H) step per subpixel."""
    xo = x.flatten(1)[:, model.order()].T
    a = model.c.expand(x.shape[0], -1)
    logits = []
    for i in range(model.num_dims):
        logits.append(torch.sigmoid(a) @ model.V[i, 0] + model.b[i, 0])
        a = a + xo[i, :, None] * model.W[i]
    out = torch.stack(logits, 1)[:, torch.argsort(model.order())]
    return discrete_log_prob(out.view_as(x), x.long(), 2)


def step_fn(model, x: torch.Tensor, variant: str):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        if variant == "loop":
            loss = -loop_log_prob(model, x).mean()
        else:
            model.block_size = model.num_dims if variant == "cumsum" else None
            loss = model.loss(x)["loss"]
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = arguments(__doc__, "two repeats, batches 64 and 128 only")
    parser.add_argument("--hidden", type=int, nargs="+", default=[250, 500], help="hidden units H (250: the preset; 500: the paper)")
    parser.add_argument("--repeats", type=int, default=10, help="interleaved repeats (best of them is reported)")
    parser.add_argument("--name", default="nade", help="results file: benchmarks/results/<name>.json")
    args = parse(parser)
    batches = [64, 128] if args.quick else [64, 128, 256]
    repeats = 2 if args.quick else args.repeats
    variants = ["blocked", "loop", "cumsum"]
    load = os.getloadavg()[0]
    results = {"threads": torch.get_num_threads(), "repeats": repeats, "statistic": "best of repeats, interleaved",
               "load_average_at_start": load, "rows": []}
    rows = []
    for hidden in args.hidden:
        torch.manual_seed(0)
        model = models.build("nade", (1, 28, 28), 2, hidden_units=hidden)
        for batch in batches:
            x = torch.bernoulli(torch.full((batch, 1, 28, 28), 0.3))
            with torch.no_grad():
                diff = (loop_log_prob(model, x) - model.log_prob(x)).abs().max().item()
            assert diff < 1e-3, f"the loop disagrees with genwb's NADE by {diff} nats"
            steps = {v: step_fn(model, x, v) for v in variants}
            best = {v: float("inf") for v in variants}
            for v in variants:
                steps[v]()  # warm-up
            for _ in range(repeats):
                for v in variants:
                    t = time.perf_counter()
                    steps[v]()
                    best[v] = min(best[v], time.perf_counter() - t)
            model.block_size = None
            ips = {v: batch / best[v] for v in variants}
            block = model._block_size(batch, x.device)
            results["rows"].append({"hidden": hidden, "batch": batch, "block": block,
                                    **{f"{v}_images_per_s": ips[v] for v in variants},
                                    "blocked_over_loop": ips["blocked"] / ips["loop"],
                                    "blocked_over_cumsum": ips["blocked"] / ips["cumsum"]})
            rows.append([hidden, batch, block, *(f"{ips[v]:,.0f}" for v in variants),
                         f"{ips['blocked'] / ips['loop']:.2f}x", f"{ips['blocked'] / ips['cumsum']:.2f}x"])
            print(f"  H {hidden}, batch {batch}: done", file=sys.stderr, flush=True)
    end_load = os.getloadavg()[0]
    results["load_average_at_end"] = end_load
    print(f"machine: {machine()}; load average {load:.1f} at start, {end_load:.1f} at end (the CPU may be shared)")
    print(f"training img/s, best of {repeats} interleaved repeats\n")
    print(table(["H", "batch", "block", "blocked", "per-position loop", "one-shot cumsum", "blocked / loop", "blocked / cumsum"], rows))
    if not args.quick:
        print(f"\nwritten to {save(args.name, results)}")


if __name__ == "__main__":
    main()
