"""VQ-VAE training throughput: genwb's ``vqvae`` with the course's loss (codebook + commitment
terms, no EMA, no k-means start, no dead-code restart) and with EMA codebook updates + dead-code
restart, against a same-size reference VQ-VAE written plainly below (the structure of
pytorch-generative's VQ-VAE: strided 4x4 convolutions, a 3x3, residual blocks, a 1x1 to the code
dimension, the nearest code by squared distance, the straight-through estimator, codebook +
0.25 commitment loss, the mirror-image decoder, a Bernoulli likelihood). Binarised 28x28 images,
the preset's sizes (128 codes of 16 dimensions, 64 channels, 2 residual blocks of 32), one Adam
step per timing, the variants timed in turn within each repeat (each repeat starting with the next
variant: whichever goes first pays for the others' cache footprint), the median of the repeats.

On a GPU this step is launch-bound at batch 128: its time follows the number of operators it
dispatches (each a kernel launch, or at least host work) and the host-device syncs more than
the arithmetic. So the table also counts, with torch.profiler on the CPU, the aten operators
one training step (forward, backward, Adam) dispatches, nested ones included, and the syncs
in the model's forward and backward (``.item()`` and the like, and ``nonzero``), averaged
over OPS_STEPS steps after the warm-up.

    python benchmarks/bench_vqvae.py [--quick] [--threads N] [--batch 128] [--profile]

--profile prints torch.profiler's top operators for one genwb step of each kind.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402
from benchmarks.common import arguments, machine, parse, save, table  # noqa: E402

SIZES = dict(num_codes=128, code_dim=16, channels=64, res_channels=32, res_blocks=2, downsamples=2)
VARIANTS = {
    "course": dict(ema=False, kmeans_init=False, restart_dead=False),
    "ema_restart": dict(ema=True, kmeans_init=True, restart_dead=True),
}


class ResidualStack(nn.Module):
    def __init__(self, channels: int, hidden: int, blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
            for _ in range(blocks))

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return F.relu(x)


class ReferenceVQVAE(nn.Module):
    """The plain VQ-VAE: encoder, nearest-code quantiser, decoder; loss = summed BCE per image
    + ||sg[z_e] - e||^2 + 0.25 ||z_e - sg[e]||^2 (means over the latent vectors)."""

    def __init__(self, in_channels=1, channels=64, res_channels=32, res_blocks=2, num_codes=128, code_dim=16):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, channels // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels // 2, channels, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), ResidualStack(channels, res_channels, res_blocks),
            nn.Conv2d(channels, code_dim, 1))
        self.codebook = nn.Embedding(num_codes, code_dim)
        self.codebook.weight.data.uniform_(-1 / num_codes, 1 / num_codes)
        self.decoder = nn.Sequential(
            nn.Conv2d(code_dim, channels, 3, padding=1), ResidualStack(channels, res_channels, res_blocks),
            nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(channels // 2, in_channels, 4, stride=2, padding=1))

    def loss(self, x):
        z = self.encoder(x)
        n, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        e = self.codebook.weight
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None]
        q = self.codebook(dist.argmin(1)).view(n, h, w, c).permute(0, 3, 1, 2)
        vq = F.mse_loss(q, z.detach()) + 0.25 * F.mse_loss(z, q.detach())
        out = self.decoder(z + (q - z).detach())
        recon = F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1).mean()
        return recon + vq


def build(variant: str):
    torch.manual_seed(0)
    if variant == "reference":
        return ReferenceVQVAE(**{k: v for k, v in SIZES.items() if k != "downsamples"})
    return models.build("vqvae", (1, 28, 28), 2, **SIZES, **VARIANTS[variant])


def step_fn(model, x):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model.loss(x)
        (out["loss"] if isinstance(out, dict) else out).backward()
        opt.step()

    return step


OPS_STEPS = 10
SYNCS = {"aten::_local_scalar_dense", "aten::nonzero"}  # .item(), .tolist(), bool(t), ...; nonzero


def op_counts(step) -> tuple[float, float]:
    """aten operators dispatched per training step, and host-device syncs per step outside the
    optimizer (Adam's CPU path reads its step counts; on CUDA it runs foreach, without)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    for _ in range(3):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(OPS_STEPS):
            step()
    ops = syncs = 0
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        ops += 1
        if event.name in SYNCS:
            parent = event.cpu_parent
            while parent is not None and not parent.name.startswith("Optimizer.step"):
                parent = parent.cpu_parent
            syncs += parent is None
    return ops / OPS_STEPS, syncs / OPS_STEPS


def profile(step, label: str) -> str:
    from torch.profiler import ProfilerActivity, profile as torch_profile
    for _ in range(3):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    return f"\n{label}, 5 steps:\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18)


def main() -> None:
    parser = arguments(__doc__, "three repeats")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators for genwb's steps")
    args = parse(parser)
    repeats = 3 if args.quick else 45
    x = torch.bernoulli(torch.full((args.batch, 1, 28, 28), 0.3))
    variants = ["reference", *VARIANTS]
    steps = {v: step_fn(build(v), x) for v in variants}
    params = {v: sum(p.numel() for p in build(v).parameters()) for v in variants}
    load = os.getloadavg()[0]
    for step in steps.values():
        step()  # warm-up (and genwb's k-means start)
    times = {v: [] for v in variants}
    for r in range(repeats):
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:  # no variant always goes first
            t = time.perf_counter()
            steps[v]()
            times[v].append(time.perf_counter() - t)
    ips = {v: args.batch / statistics.median(times[v]) for v in variants}
    best_ips = {v: args.batch / min(times[v]) for v in variants}
    end_load = os.getloadavg()[0]
    counts = {v: op_counts(step_fn(build(v), x)) for v in variants}
    names = {"reference": "reference (plain, pytorch-generative's structure)",
             "course": "genwb vqvae, course loss (ema=false, no restart)",
             "ema_restart": "genwb vqvae, EMA + k-means + dead-code restart"}
    rows = [[names[v], params[v], f"{ips[v]:,.0f}", f"{ips[v] / ips['reference']:.2f}x", f"{counts[v][0]:,.0f}",
             f"{counts[v][1]:g}"] for v in variants]
    print(f"machine: {machine()}; load average {load:.1f} at start, {end_load:.1f} at end (the CPU may be shared)")
    print(f"training img/s at batch {args.batch}: median of {repeats} steps each, interleaved in rotating order\n")
    print(table(["model", "parameters", "img/s", "of reference", "aten ops/step", "syncs/step"], rows))
    if args.profile:
        for v in VARIANTS:
            print(profile(step_fn(build(v), x), names[v]))
    if not args.quick:
        results = {"batch": args.batch, "sizes": SIZES, "threads": torch.get_num_threads(), "repeats": repeats,
                   "statistic": "median of one-step timings, interleaved in rotating order", "load_average_at_start": load, "load_average_at_end": end_load,
                   "ops_statistic": f"torch.profiler on the CPU, mean over {OPS_STEPS} steps after 3 warm-up steps",
                   "rows": [{"variant": v, "description": names[v], "parameters": params[v], "images_per_s": ips[v],
                             "of_reference": ips[v] / ips["reference"], "best_images_per_s": best_ips[v],
                             "best_of_reference": best_ips[v] / best_ips["reference"], "aten_ops_per_step": counts[v][0],
                             "syncs_per_step": counts[v][1]} for v in variants]}
        print(f"\nwritten to {save('vqvae', results)}")


if __name__ == "__main__":
    main()
