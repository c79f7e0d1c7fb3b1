"""One prepared GPU check (synthetic data only, no downloads, a few minutes on an H100/H200):

1. NADE: the blocked cumulative sum equals the one-shot one on the device (max |log_prob| diff);
2. NADE training img/s, blocked (the CPU's block size) against one-shot cumsum, batches 64-256;
3. sampling time for 64 images at 28x28 of every autoregressive model at its preset's size;
4. Row LSTM and Diagonal BiLSTM training img/s at batch 32 (preset sizes);
5. VQ-VAE training img/s at batch 128: course loss, EMA + restart, and the plain reference of
   benchmarks/bench_vqvae.py;
6. fp32 against bf16 autocast (as the Trainer applies it) for MADE [1000], PixelCNN 7x64,
   gated PixelCNN 10x128 and MADE 2x8000;
7. every presets/paper/ preset (but the prior): training img/s in fp32 and bf16 at its batch
   size, and the seconds per epoch that implies.

    python benchmarks/gpu_check.py                       # on the GPU
    python benchmarks/gpu_check.py --quick --device cpu  # a smoke test: tiny shapes, one step each

Prints a table per section and writes JSON to $OUT/gpu_check.json when $OUT is set, else to
benchmarks/results/gpu_check.json. Every measurement is guarded: one that fails records its error
and the rest go on; past --budget seconds the remaining measurements are skipped (and say so).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import tomllib
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import models  # noqa: E402
from benchmarks.bench_vqvae import SIZES as VQ_SIZES, VARIANTS as VQ_VARIANTS, ReferenceVQVAE  # noqa: E402
from benchmarks.common import machine, table  # noqa: E402

SAMPLED = ["fvsbn", "nade", "made", "pixelcnn", "pixelcnn_gated", "row_lstm", "diagonal_bilstm", "ar"]
TRAIN_SIZE = {"mnist": 50000, "fashion-mnist": 55000, "kmnist": 55000, "cifar10": 45000}


class Check:
    def __init__(self, args):
        self.args, self.device = args, torch.device(args.device)
        self.start = time.perf_counter()
        self.results: dict = {"sections": {}, "errors": [], "skipped": []}

    # -- plumbing --------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def guarded(self, section: str, label: str, fn):
        """fn() or None: an error is recorded (and printed), time past the budget skips."""
        if self.elapsed() > self.args.budget:
            self.results["skipped"].append(f"{section}: {label}")
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - one failed measurement must not stop the others
            msg = f"{section}: {label}: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
            self.results["errors"].append(msg)
            print("  ERROR " + msg, file=sys.stderr, flush=True)
            if self.args.traceback:
                traceback.print_exc()
            return None
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def autocast(self, bf16: bool):
        """The Trainer's autocast: bf16 on CUDA when asked; nothing otherwise."""
        if bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def data(self, shape, levels: int, batch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        if levels == 2:
            x = torch.bernoulli(torch.full((batch, *shape), 0.3), generator=g)
        else:
            x = torch.randint(0, levels, (batch, *shape), generator=g) / (levels - 1)
        return x.to(self.device)

    def train_rate(self, model, x: torch.Tensor, bf16: bool) -> float:
        """Training img/s (Adam, the Trainer's autocast), synchronised only at the ends, over at
        least --min-time seconds (and at least 3 steps) after warm-up steps."""
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-4)

        def step():
            with self.autocast(bf16):
                loss = model.loss(x)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        model.train()
        for _ in range(1 if self.args.quick else 3):
            step()
        self.sync()
        steps, t = 0, time.perf_counter()
        min_steps = 1 if self.args.quick else 3
        while steps < min_steps or (time.perf_counter() - t < self.args.min_time and steps < 200):
            step()
            steps += 1
        self.sync()
        return x.shape[0] * steps / (time.perf_counter() - t)

    def preset(self, path: Path):
        cfg = tomllib.loads(path.read_text())
        hparams = {k: v for k, v in cfg["model"].items() if k not in ("name", "conditional") and not k.endswith("_run")}
        return cfg, hparams

    def shape(self, dataset: str):
        c, s = (3, 32) if dataset == "cifar10" else (1, 28)
        return (c, 8, 8) if self.args.quick else (c, s, s)

    def report(self, name: str, headers: list[str], rows: list[list], payload) -> None:
        self.results["sections"][name] = payload
        print(f"\n## {name} ({self.elapsed():.0f} s)\n")
        print(table(headers, rows) if rows else "(nothing measured)", flush=True)

    # -- the sections ----------------------------------------------------------------------
    def nade_equal(self):
        rows, out = [], []
        for hidden in (250, 500):
            def run(hidden=hidden):
                torch.manual_seed(0)
                model = models.build("nade", self.shape("mnist"), 2, hidden_units=hidden).to(self.device)
                with torch.no_grad():
                    for p in model.parameters():
                        p.normal_(0, 0.05)
                x = self.data(model.image_shape, 2, 64)
                with torch.no_grad():
                    model.block_size = model.num_dims
                    one_shot = model.log_prob(x)
                    model.block_size = model._block_size(64, torch.device("cpu"))
                    blocked = model.log_prob(x)
                    model.block_size = None
                    cpu64 = model.double().cpu().log_prob(x.double().cpu())
                return {"hidden": hidden, "block": model._block_size(64, torch.device("cpu")),
                        "max_abs_diff_blocked_vs_cumsum": (blocked - one_shot).abs().max().item(),
                        "max_abs_diff_cumsum_vs_cpu_float64": (one_shot.double().cpu() - cpu64).abs().max().item(),
                        "mean_nll_nats": -one_shot.mean().item()}
            r = self.guarded("nade_equal", f"H {hidden}", run)
            if r:
                out.append(r)
                rows.append([hidden, r["block"], f"{r['max_abs_diff_blocked_vs_cumsum']:.2e}",
                             f"{r['max_abs_diff_cumsum_vs_cpu_float64']:.2e}", f"{r['mean_nll_nats']:.2f}"])
        self.report("nade_equal", ["H", "block", "max |blocked - cumsum| (nats)", "max |device - CPU float64|", "mean NLL"], rows, out)

    def nade_train(self):
        rows, out = [], []
        for hidden in (250, 500):
            for batch in (64, 128, 256):
                def run(hidden=hidden, batch=batch):
                    torch.manual_seed(0)
                    model = models.build("nade", self.shape("mnist"), 2, hidden_units=hidden).to(self.device)
                    x = self.data(model.image_shape, 2, batch)
                    block = model._block_size(batch, torch.device("cpu"))
                    r = {"hidden": hidden, "batch": batch, "block": block}
                    for bf16 in (False, True):
                        tag = "bf16" if bf16 else "fp32"
                        model.block_size = block
                        r[f"blocked_{tag}"] = self.train_rate(model, x, bf16)
                        model.block_size = None  # the device's default: one shot on CUDA
                        r[f"cumsum_{tag}"] = self.train_rate(model, x, bf16)
                    return r
                r = self.guarded("nade_train", f"H {hidden} batch {batch}", run)
                if r:
                    out.append(r)
                    rows.append([hidden, batch, r["block"], *(f"{r[k]:,.0f}" for k in ("blocked_fp32", "cumsum_fp32", "blocked_bf16", "cumsum_bf16")),
                                 f"{r['blocked_fp32'] / r['cumsum_fp32']:.2f}x"])
        self.report("nade_train", ["H", "batch", "block", "blocked fp32", "cumsum fp32", "blocked bf16", "cumsum bf16", "blocked/cumsum fp32"], rows, out)

    def sampling(self):
        rows, out = [], []
        n = 4 if self.args.quick else 64
        for name in SAMPLED:
            path = ROOT / "presets" / f"{name}.toml"
            if not path.exists():
                continue

            def run(name=name, path=path):
                cfg, hparams = self.preset(path)
                levels = cfg["data"]["levels"]
                torch.manual_seed(0)
                model = models.build(cfg["model"]["name"], self.shape("mnist"), levels, **hparams).to(self.device).eval()
                model.sample(n)  # warm-up (and any capture a fast sampler makes)
                best = float("inf")
                for _ in range(1 if self.args.quick else 2):
                    self.sync()
                    t = time.perf_counter()
                    model.sample(n)
                    self.sync()
                    best = min(best, time.perf_counter() - t)
                return {"preset": name, "model": cfg["model"]["name"], "levels": levels, "hparams": hparams, "n": n, "seconds": best}
            r = self.guarded("sampling", name, run)
            if r:
                out.append(r)
                rows.append([name, r["levels"], n, f"{r['seconds']:.3f}", "yes" if r["seconds"] < 0.25 else "no"])
        self.report("sampling", ["preset", "levels", "images", "seconds (best of 2)", "under 0.25 s"], rows, out)

    def recurrent_train(self):
        rows, out = [], []
        batch = 4 if self.args.quick else 32
        for name in ("row_lstm", "diagonal_bilstm"):
            def run(name=name):
                cfg, hparams = self.preset(ROOT / "presets" / f"{name}.toml")
                torch.manual_seed(0)
                model = models.build(name, self.shape("mnist"), cfg["data"]["levels"], **hparams).to(self.device)
                x = self.data(model.image_shape, cfg["data"]["levels"], batch)
                return {"model": name, "hparams": hparams, "batch": batch,
                        "fp32": self.train_rate(model, x, False), "bf16": self.train_rate(model, x, True)}
            r = self.guarded("recurrent_train", name, run)
            if r:
                out.append(r)
                rows.append([name, batch, f"{r['fp32']:,.0f}", f"{r['bf16']:,.0f}"])
        self.report("recurrent_train", ["model (preset size)", "batch", "fp32 img/s", "bf16 img/s"], rows, out)

    def vqvae_train(self):
        rows, out = [], []
        batch = 4 if self.args.quick else 128
        for variant in ("reference", *VQ_VARIANTS):
            def run(variant=variant):
                torch.manual_seed(0)
                if variant == "reference":
                    ref = ReferenceVQVAE(**{k: v for k, v in VQ_SIZES.items() if k != "downsamples"}).to(self.device)
                    model = _LossDict(ref)
                else:
                    model = models.build("vqvae", self.shape("mnist"), 2, **VQ_SIZES, **VQ_VARIANTS[variant]).to(self.device)
                x = self.data(self.shape("mnist"), 2, batch)
                return {"variant": variant, "batch": batch, "fp32": self.train_rate(model, x, False), "bf16": self.train_rate(model, x, True)}
            r = self.guarded("vqvae_train", variant, run)
            if r:
                out.append(r)
        ref = next((r for r in out if r["variant"] == "reference"), None)
        for r in out:
            rel = (lambda k: f"{r[k] / ref[k]:.2f}x") if ref else (lambda k: "-")
            rows.append([r["variant"], batch, f"{r['fp32']:,.0f}", rel("fp32"), f"{r['bf16']:,.0f}", rel("bf16")])
        self.report("vqvae_train", ["variant", "batch", "fp32 img/s", "of reference", "bf16 img/s", "of reference"], rows, out)

    def bf16_small_and_large(self):
        cases = [("MADE [1000]", "made", 2, dict(hidden=[1000]), 100),
                 ("PixelCNN 7x64", "pixelcnn", 2, dict(hidden_channels=64, num_layers=7), 32),
                 ("gated PixelCNN 10x128", "pixelcnn", 2, dict(gated=True, hidden_channels=128, num_layers=10), 32),
                 ("MADE 2x8000 (1 mask set)", "made", 2, dict(hidden=[8000, 8000]), 100)]
        rows, out = [], []
        for label, name, levels, hparams, batch in cases:
            if self.args.quick:
                batch = 4
            def run(name=name, levels=levels, hparams=hparams, batch=batch, label=label):
                torch.manual_seed(0)
                model = models.build(name, self.shape("mnist"), levels, **hparams).to(self.device)
                x = self.data(model.image_shape, levels, batch)
                return {"case": label, "batch": batch, "fp32": self.train_rate(model, x, False), "bf16": self.train_rate(model, x, True)}
            r = self.guarded("bf16", label, run)
            if r:
                out.append(r)
                rows.append([label, batch, f"{r['fp32']:,.0f}", f"{r['bf16']:,.0f}", "bf16" if r["bf16"] > r["fp32"] else "fp32"])
        self.report("bf16", ["model", "batch", "fp32 img/s", "bf16 img/s", "faster"], rows, out)

    def paper_presets(self):
        rows, out = [], []
        for path in sorted((ROOT / "presets" / "paper").glob("*.toml")):
            cfg, hparams = self.preset(path)
            if cfg["model"]["name"] == "vqvae_prior":
                continue

            def run(path=path, cfg=cfg, hparams=hparams):
                dataset, levels = cfg["data"]["dataset"], cfg["data"]["levels"]
                batch = 2 if self.args.quick else cfg["data"]["batch_size"]
                note = ""
                if cfg["model"]["name"] == "made" and hparams.get("num_masks", 1) > 1:
                    # One mask set per step either way; 32 sets only add buffers (and build time).
                    hparams = {**hparams, "num_masks": 1}
                    note = "num_masks 1 for timing"
                torch.manual_seed(0)
                model = models.build(cfg["model"]["name"], self.shape(dataset), levels,
                                     None, **hparams).to(self.device)
                x = self.data(model.image_shape, levels, batch)
                fp32, bf16 = self.train_rate(model, x, False), self.train_rate(model, x, True)
                best = max(fp32, bf16)
                return {"preset": path.stem, "batch": batch, "parameters": sum(p.numel() for p in model.parameters()),
                        "fp32": fp32, "bf16": bf16, "faster": "bf16" if bf16 > fp32 else "fp32",
                        "seconds_per_epoch": TRAIN_SIZE.get(dataset, 50000) / best, "note": note}
            r = self.guarded("paper_presets", path.stem, run)
            if r:
                out.append(r)
                rows.append([r["preset"], r["batch"], f"{r['parameters'] / 1e6:.1f}M", f"{r['fp32']:,.0f}", f"{r['bf16']:,.0f}",
                             r["faster"], f"{r['seconds_per_epoch']:.0f}", r["note"]])
        self.report("paper_presets", ["preset", "batch", "params", "fp32 img/s", "bf16 img/s", "faster", "s / epoch", "note"], rows, out)


class _LossDict(torch.nn.Module):
    """The reference VQ-VAE behind genwb's ``loss`` contract (a dict with "loss")."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def loss(self, x):
        return {"loss": self.inner.loss(x)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (8x8 images), one timed step: a smoke test")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds after which remaining measurements are skipped")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds each training measurement runs for")
    parser.add_argument("--traceback", action="store_true", help="print tracebacks of failed measurements")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: CUDA is not available here; use --device cpu (with --quick) to smoke-test")
    if args.quick:
        args.min_time = 0.0
    check = Check(args)
    print(f"machine: {machine()}; device {args.device}{' (quick: tiny shapes)' if args.quick else ''}", flush=True)
    for section in (check.nade_equal, check.nade_train, check.sampling, check.recurrent_train,
                    check.vqvae_train, check.bf16_small_and_large, check.paper_presets):
        section()
    res = check.results
    res.update({"machine": machine(), "device": args.device, "quick": args.quick, "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(check.device) if check.device.type == "cuda" else None,
                "wall_s": check.elapsed()})
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "gpu_check.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\n{len(res['errors'])} errors, {len(res['skipped'])} skipped, {res['wall_s']:.0f} s; written to {path}")
    for e in res["errors"]:
        print("  " + e)


if __name__ == "__main__":
    main()
