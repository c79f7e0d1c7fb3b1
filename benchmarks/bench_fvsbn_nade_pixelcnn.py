"""FVSBN, NADE and PixelCNN (plain and gated) at 28x28: training throughput, and sampling time
of the naive sampler (one full forward pass per subpixel) against the incremental (FVSBN, NADE)
or cached (PixelCNN) sampler, side by side. Every model is built as its preset builds it.

    python benchmarks/bench_fvsbn_nade_pixelcnn.py [--quick] [--threads N]

The naive PixelCNN samplers are timed over their first rows and extrapolated to all 784
subpixels (each naive step is one full forward pass of the same shape, so the cost per step is
constant); the output says so. Without --quick, the cached samplers are also checked to give the
same images as the full naive samplers at 28x28, from the same noise. On a CPU shared with other
jobs, two threads that wait on each other can make small operations (FVSBN steps, the cached
samplers' one-position layers) many times slower; --threads 1 measures without that effect.
"""
from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import models  # noqa: E402
from benchmarks.common import arguments, machine, parse, save, table, timed  # noqa: E402
from models.layers import inverse_cdf  # noqa: E402

PRESETS = ["fvsbn", "nade", "pixelcnn", "pixelcnn_gated"]


def build_from_preset(preset: str):
    cfg = tomllib.loads((ROOT / "presets" / f"{preset}.toml").read_text())
    hparams = {k: v for k, v in cfg["model"].items() if k not in ("name", "conditional")}
    levels, batch = cfg["data"]["levels"], cfg["data"]["batch_size"]
    torch.manual_seed(0)
    model = models.build(cfg["model"]["name"], (1, 28, 28), levels, **hparams)
    return model, levels, batch, hparams


def train_images_per_s(model, levels: int, batch: int, repeats: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, levels, (batch, 1, 28, 28)) / (levels - 1)

    def step():
        opt.zero_grad(set_to_none=True)
        model.loss(x)["loss"].backward()
        opt.step()

    # Cheap steps get more repeats (about three seconds' worth), so that the median is robust
    # on a shared CPU.
    one = timed(step, repeats=1, warmup=5)
    return batch / timed(step, repeats=max(repeats, min(100, int(3.0 / one))), warmup=0)


def naive_seconds(model, n: int, steps: int) -> float:
    """Time of the generic naive sampler (``AutoregressiveModel._sample_naive``) over its first
    ``steps`` subpixels, extrapolated to all of them."""
    d = model.num_dims
    steps = min(steps, d)
    order = model.order().tolist()[:steps]

    def run():
        x = torch.zeros(n, d)
        noise = torch.rand(n, d)
        for i in order:
            logits = model.logits(x.view(n, *model.image_shape))
            li = logits.reshape(n, -1)[:, i] if model.levels == 2 else logits.reshape(n, model.levels, -1)[:, :, i]
            x[:, i] = model.from_levels(inverse_cdf(li, noise[:, i], model.levels))

    with torch.inference_mode():
        return timed(run, repeats=1, warmup=0) * d / steps


def main() -> None:
    args = parse(arguments(__doc__, "fewer repeats, naive samplers extrapolated from fewer steps"))
    n = 16
    # Naive steps timed before extrapolating: the cheap models run in full (unless --quick).
    naive_steps = {"fvsbn": 784, "nade": 196 if args.quick else 784,
                   "pixelcnn": 28 if args.quick else 112, "pixelcnn_gated": 28 if args.quick else 112}
    repeats = 3 if args.quick else 10
    load = os.getloadavg()[0]
    results = {"n_images": n, "load_average_at_start": load, "models": []}
    train_rows, sample_rows = [], []
    for preset in PRESETS:
        model, levels, batch, hparams = build_from_preset(preset)
        ips = train_images_per_s(model, levels, batch, repeats)
        model.eval()
        fast = timed(lambda: model.sample(n), repeats=1 if args.quick else 3, warmup=1)
        naive = naive_seconds(model, n, naive_steps[preset])
        extrapolated = naive_steps[preset] < model.num_dims
        label = f"{preset} ({', '.join(f'{k}={v}' for k, v in hparams.items() if k not in ('gated', 'kernel_size', 'first_kernel_size'))}), levels {levels}"
        entry = {"preset": preset, "hparams": hparams, "levels": levels, "train_batch": batch,
                 "train_images_per_s": ips, "sample_fast_s": fast, "sample_naive_s": naive,
                 "naive_extrapolated_from_steps": naive_steps[preset] if extrapolated else None,
                 "speedup": naive / fast}
        if not args.quick and preset.startswith("pixelcnn"):
            noise = torch.rand(2, 1, 28, 28)
            entry["cached_equals_naive_28x28"] = bool(torch.equal(model.sample(2, noise=noise), model.sample_naive(2, noise=noise)))
        results["models"].append(entry)
        train_rows.append([label, batch, f"{ips:,.0f}"])
        naive_txt = f"{naive:.1f} s" + (f" (extrapolated from {naive_steps[preset]} of 784 steps)" if extrapolated else "")
        sampler = "cached" if preset.startswith("pixelcnn") else "incremental"
        sample_rows.append([label, naive_txt, f"{fast:.2f} s ({sampler})", f"{naive / fast:.0f}x"]
                           + ([str(entry.get("cached_equals_naive_28x28", "-"))] if not args.quick else []))
        print(f"  {preset}: done", file=sys.stderr, flush=True)

    print(f"machine: {machine()}; load average {load:.1f} at start (the CPU may be shared)\n")
    print(table(["training at 28x28", "batch", "images/s"], train_rows))
    print()
    headers = ["sampling 16 images at 28x28", "naive", "fast", "speedup"]
    if not args.quick:
        headers.append("same images as naive (n=2)")
    print(table(headers, sample_rows))
    print(f"\nwritten to {save('fvsbn_nade_pixelcnn', results)}")


if __name__ == "__main__":
    main()
