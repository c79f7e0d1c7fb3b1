"""The logistic mixture head with 3 colours: parameters read from the R group's head units only
(before, issue 18) against each colour's parameters read from the groups up to it (now), trained
the same way on the same data: test NLL in bits/dim after a few hundred Adam steps.

    python benchmarks/bench_mixture_head.py [--quick] [--threads N] [--steps N]

The data are tiny CIFAR-like 3x8x8 images at 256 levels whose colours depend on each other
inside a pixel (smooth random fields, G near a function of R, B near one of R and G), so that
the within-pixel dependence the new head can use is there to be learned. The "before" head is the
same model with its last layer's mask put back to the R group only. Both runs share the seed,
the initial weights and the batches.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402
from benchmarks.common import arguments, machine, parse, save, table  # noqa: E402
from models.layers import channel_groups  # noqa: E402

SHAPE, LEVELS = (3, 8, 8), 256


def images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 3, 3, generator=g)
    field = F.interpolate(coarse, size=SHAPE[1:], mode="bilinear", align_corners=True)
    r = field[:, 0]
    gr = (0.7 * r + 0.3 * field[:, 1] + 0.03 * torch.randn(n, *SHAPE[1:], generator=g)).clamp(0, 1)
    b = (0.5 * r + 0.4 * gr + 0.1 * field[:, 2] + 0.03 * torch.randn(n, *SHAPE[1:], generator=g)).clamp(0, 1)
    x = torch.stack([r, gr, b], 1)
    return (x * (LEVELS - 1)).round() / (LEVELS - 1)


def build(kind: str, red_only: bool):
    torch.manual_seed(0)
    if kind == "pixelcnn":
        m = models.build("pixelcnn", SHAPE, LEVELS, output="logistic_mixture", mixtures=5, hidden_channels=24,
                         num_layers=2, head_channels=24, first_kernel_size=5)
        last = m.head.out
    else:
        m = models.build("row_lstm", SHAPE, LEVELS, output="logistic_mixture", mixtures=5, hidden=12, layers=1,
                         head_channels=24)
        last = m.head[-1]
    if red_only:
        groups = channel_groups(last.mask.shape[1], 3)
        mask = (groups == 0).float().expand(last.mask.shape[0], -1)
        last.mask.copy_(mask.reshape(last.mask.shape))
    return m


def train(kind: str, red_only: bool, steps: int, batch: int, train_x, test_x) -> tuple[float, float]:
    m = build(kind, red_only)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(train_x), (batch,), generator=g)
        loss = m.loss(train_x[idx])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        nll = -torch.cat([m.log_prob(test_x[s:s + 256]) for s in range(0, len(test_x), 256)]).mean().item()
    return nll / (math.prod(SHAPE) * math.log(2)), time.perf_counter() - start


def main() -> None:
    parser = arguments(__doc__, "200 steps of pixelcnn only (a few minutes on 2 cores)")
    parser.add_argument("--steps", type=int, default=0, help="Adam steps (default 400, 200 with --quick)")
    args = parse(parser)
    steps = args.steps or (200 if args.quick else 400)
    kinds = ["pixelcnn"] if args.quick else ["pixelcnn", "row_lstm"]
    train_x, test_x = images(4096, 0), images(512, 1)
    rows, results = [], {}
    for kind in kinds:
        before, t0 = train(kind, True, steps, 32, train_x, test_x)
        after, t1 = train(kind, False, steps, 32, train_x, test_x)
        results[kind] = {"red_only_bpd": before, "all_groups_bpd": after, "seconds": [t0, t1]}
        rows.append([kind, steps, f"{before:.3f}", f"{after:.3f}", f"{before - after:+.3f}"])
        print(rows[-1], flush=True)
    print(machine())
    print(table(["model", "steps", "R group only (bits/dim)", "groups up to the colour", "gain"], rows))
    save("mixture_head" + ("-quick" if args.quick else ""), {"steps": steps, "shape": list(SHAPE), "results": results})


if __name__ == "__main__":
    main()
