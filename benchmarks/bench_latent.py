"""Latent family at 28x28 (binarised, batch 128): training throughput (loss + backward + Adam
step, images/s) and sampling time of vae, cvae, vqvae and vqvae_prior with their default
hyper-parameters; also the IWAE evaluation rate of the VAE (K = 16). Prints a markdown table
and writes benchmarks/results/latent.json.

    python benchmarks/bench_latent.py [--quick] [--threads N]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402
from benchmarks.common import arguments, machine, parse, save, table, timed  # noqa: E402

SHAPE = (1, 28, 28)
BATCH = 128
MODELS = [("vae", None), ("cvae", 10), ("vqvae", None), ("vqvae_prior", None)]


def train_step_fn(model, x, y):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        model.loss(x, y)["loss"].backward()
        opt.step()

    return step


def main() -> None:
    args = parse(arguments(__doc__, "fewer repeats (well under a minute)"))
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((BATCH, *SHAPE), 0.3))
    labels = torch.arange(BATCH) % 10
    repeats = 3 if args.quick else 10
    rows, results = [], {"image_shape": list(SHAPE), "levels": 2, "batch": BATCH, "train": [], "sample": []}
    for name, classes in MODELS:
        model = models.build(name, SHAPE, 2, classes)
        y = labels if classes else None
        seconds = timed(train_step_fn(model, x, y), repeats=repeats, warmup=3)
        model.eval()
        with torch.inference_mode():
            sample_s = timed(lambda: model.sample(64), repeats=repeats, warmup=1)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        results["train"].append({"model": name, "conditional": classes is not None, "trainable_params": params,
                                 "images_per_s": BATCH / seconds, "seconds_per_step": seconds})
        results["sample"].append({"model": name, "n": 64, "seconds": sample_s})
        rows.append([name, f"{params:,}", f"{BATCH / seconds:,.0f} img/s", f"{seconds:.3f} s", f"{sample_s * 1000:.0f} ms"])
        print(f"  {name}: {BATCH / seconds:,.0f} img/s", flush=True)

    vae = models.build("vae", SHAPE, 2).eval()
    with torch.no_grad():
        iwae_s = timed(lambda: vae.log_prob(x, samples=16), repeats=repeats, warmup=1)
    results["iwae"] = {"model": "vae", "samples": 16, "images_per_s": BATCH / iwae_s}

    print(f"\nmachine: {machine()}\n")
    print(table(["model (28x28, levels 2)", "trainable params", f"training, batch {BATCH}", "s/step", "sample 64"], rows))
    print(f"\nVAE IWAE bound (K = 16): {BATCH / iwae_s:,.0f} images/s")
    print(f"\nwritten to {save('latent', results)}")


if __name__ == "__main__":
    main()
