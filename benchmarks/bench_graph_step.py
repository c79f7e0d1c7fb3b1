"""Training throughput of the eager step against the step replayed from a CUDA graph
(``[train] cuda_graph``, workbench.accel.GraphStep), side by side, for the launch-bound models
at their presets' sizes: the Row LSTM and the Diagonal BiLSTM at batch 32 (issue 12's figures
were 407 and 334 img/s on an H200), the other small models at their presets' batches, and the
VQ-VAE (course loss; EMA + dead-code restart) beside bench_vqvae.py's same-size reference.

Each model is built twice from the same seed; both train on the same batches with Adam, as the
Trainer does (``accel.training_step``, then ``opt.step()``). The first 10 losses of the two are
compared (a deterministic loss gives the same numbers), then the two are timed in turn,
best of the repeats, synchronised at the ends only.

    python benchmarks/bench_graph_step.py               # on a GPU: eager and graphed
    python benchmarks/bench_graph_step.py --quick       # a smoke test; on a CPU only eager runs
    python benchmarks/bench_graph_step.py --paper       # the presets/paper/ presets, for their time per epoch
    python benchmarks/bench_graph_step.py --only row_lstm --compile row_lstm   # eager against torch.compile(mode='reduce-overhead')

Writes benchmarks/results/graph_step[-<gpu>].json (or $OUT/graph_step.json when $OUT is set).
"""
from __future__ import annotations

import json
import os
import sys
import time
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import models  # noqa: E402
from benchmarks.bench_vqvae import SIZES as VQ_SIZES, VARIANTS as VQ_VARIANTS, ReferenceVQVAE  # noqa: E402
from benchmarks.common import arguments, machine, parse, save, table  # noqa: E402
from workbench import accel  # noqa: E402

# (label, preset, batch, hyper-parameter overrides); preset "vqvae-reference": bench_vqvae's plain VQ-VAE
CASES = [
    ("row_lstm", "row_lstm", 32, {}),
    ("diagonal_bilstm", "diagonal_bilstm", 32, {}),
    ("diagonal_bilstm 7 layers", "diagonal_bilstm", 32, {"layers": 7}),
    ("pixelcnn", "pixelcnn", None, {}),
    ("pixelcnn_gated", "pixelcnn_gated", None, {}),
    ("made", "made", None, {}),
    ("nade", "nade", None, {}),
    ("fvsbn", "fvsbn", None, {}),
    ("ar", "ar", None, {}),
    ("vae", "vae", None, {}),
    ("row_lstm_cifar10 (paper)", "paper/row_lstm_cifar10", None, {}),
    ("pixelcnn_gated_cifar10 (paper)", "paper/pixelcnn_gated_cifar10", None, {}),
    ("vqvae reference", "vqvae-reference", 128, {}),
    ("vqvae course", "vqvae", 128, {**VQ_SIZES, **VQ_VARIANTS["course"]}),
    ("vqvae ema_restart", "vqvae", 128, {**VQ_SIZES, **VQ_VARIANTS["ema_restart"]}),
]
SHAPES = {"cifar10": (3, 32, 32)}
# --paper: every presets/paper/ preset but the prior (which needs a trained VQ-VAE), at its batch size
PAPER = [(f"{p.stem} (paper)", f"paper/{p.stem}", None, {})
         for p in sorted((ROOT / "presets" / "paper").glob("*.toml")) if "prior" not in p.stem]


class _Reference(torch.nn.Module):
    """bench_vqvae's reference VQ-VAE behind the model contract's ``loss`` (a dict)."""

    def __init__(self):
        super().__init__()
        self.inner = ReferenceVQVAE(**{k: v for k, v in VQ_SIZES.items() if k != "downsamples"})
        self.image_shape = (1, 28, 28)

    def loss(self, x, y=None):
        return {"loss": self.inner.loss(x)}


def build(preset: str, overrides: dict, device, quick: bool):
    torch.manual_seed(0)
    if preset == "vqvae-reference":
        return _Reference().to(device).train(), 128, 2
    cfg = tomllib.loads((ROOT / "presets" / f"{preset}.toml").read_text())
    data = cfg.get("data", {})
    hparams = {k: v for k, v in cfg["model"].items() if k not in ("name", "conditional") and not k.endswith("_run")}
    hparams.update(overrides)
    shape = SHAPES.get(data.get("dataset"), (1, 28, 28))
    if quick:
        shape = (shape[0], 8, 8)
    levels = data.get("levels", 2)
    model = models.build(cfg["model"]["name"], shape, levels, **hparams).to(device).train()
    return model, data.get("batch_size", 64), levels


def batches(model, levels: int, batch: int, count: int, device):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        if levels == 2:
            x = torch.bernoulli(torch.full((batch, *model.image_shape), 0.3), generator=g)
        else:
            x = torch.randint(0, levels, (batch, *model.image_shape), generator=g) / (levels - 1)
        out.append(x.to(device))
    return out


class Trainee:
    """A model, its Adam and its step (eager or graphed), as the Trainer runs them."""

    def __init__(self, model, graphed: bool, compile: str = "off"):
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=1e-4)
        self.warnings: list[str] = []
        self.step_fn = accel.training_step(model.loss, compile=compile, cuda_graph=graphed, params=self.params,
                                           warn=self.warnings.append)

    def step(self, x) -> torch.Tensor:
        if not self.step_fn.owns_grads:
            self.opt.zero_grad(set_to_none=True)
        parts = self.step_fn(x)
        self.opt.step()
        return parts["loss"]


def rate(trainee: Trainee, xs, steps: int, max_time: float) -> float:
    """img/s over ``steps`` steps, or fewer (at least 3) where they pass ``max_time`` seconds."""
    sync = torch.cuda.synchronize if xs[0].is_cuda else (lambda: None)
    sync()
    t = time.perf_counter()
    done = 0
    while done < steps and (done < 3 or time.perf_counter() - t < max_time):
        trainee.step(xs[done % len(xs)])
        done += 1
    sync()
    return xs[0].shape[0] * done / (time.perf_counter() - t)


def measure(label, preset, batch, overrides, device, args, compile_mode="off"):
    graphs = device.type == "cuda"
    eager_model, preset_batch, levels = build(preset, overrides, device, args.quick)
    batch = batch or preset_batch
    xs = batches(eager_model, levels, batch, 8, device)
    eager = Trainee(eager_model, graphed=False)
    other = None
    if compile_mode != "off":
        other = Trainee(build(preset, overrides, device, args.quick)[0], graphed=False, compile=compile_mode)
    elif graphs:
        other = Trainee(build(preset, overrides, device, args.quick)[0], graphed=True)
    compare = 3 if args.quick else 10
    diffs = []
    for i in range(compare):  # warm-up, capture, and the first losses side by side
        a = eager.step(xs[i % len(xs)])
        if other is not None:
            b = other.step(xs[i % len(xs)])
            diffs.append(abs(a.item() - b.item()) / max(1e-12, abs(a.item())))
    steps = 2 if args.quick else args.steps
    best_eager = best_other = 0.0
    for _ in range(1 if args.quick else args.repeats):
        best_eager = max(best_eager, rate(eager, xs, steps, args.max_time))
        if other is not None:
            best_other = max(best_other, rate(other, xs, steps, args.max_time))
    step_fn = other.step_fn if other is not None else None
    # whether the variant really ran: a graph captured, or the loss compiled (no fallback)
    ran = isinstance(step_fn, accel.GraphStep) and step_fn.is_graphed or isinstance(step_fn, accel.LossStep) and step_fn.is_compiled
    return {
        "model": label, "batch": batch, "parameters": sum(p.numel() for p in eager.params),
        "eager": best_eager, "other": best_other if other is not None else None,
        "variant": "compile " + compile_mode if compile_mode != "off" else ("cuda graph" if graphs else None),
        "speedup": best_other / best_eager if other is not None and best_eager else None,
        "max_rel_loss_diff": max(diffs) if diffs else None, "ran": bool(ran),
        "warnings": other.warnings if other is not None else [],
    }


def main() -> None:
    parser = arguments(__doc__, "tiny 8x8 images, a couple of steps each (a smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=60, help="steps per timing")
    parser.add_argument("--max-time", type=float, default=2.0, help="seconds per timing at most (then fewer steps)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="labels of the cases to run")
    parser.add_argument("--paper", action="store_true", help="the presets/paper/ presets instead (fp32)")
    parser.add_argument("--compile", nargs="*", default=[], metavar="LABEL",
                        help="these cases against torch.compile(mode='reduce-overhead') instead")
    args = parse(parser)
    device = torch.device(args.device)
    rows, results = [], []
    for label, preset, batch, overrides in PAPER if args.paper else CASES:
        if args.only is not None and label not in args.only:
            continue
        for mode in ["reduce-overhead"] if label in args.compile else ["off"]:
            started = time.perf_counter()
            try:
                r = measure(label, preset, batch, overrides, device, args, mode)
            except Exception as e:  # noqa: BLE001 - one model's failure must not hide the others
                r = {"model": label, "variant": mode, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
                print("ERROR", r["error"], file=sys.stderr, flush=True)
                results.append(r)
                continue
            r["seconds"] = time.perf_counter() - started
            results.append(r)
            other = "-" if r["other"] is None else f"{r['other']:,.0f}"
            speedup = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
            diff = "-" if r["max_rel_loss_diff"] is None else f"{r['max_rel_loss_diff']:.1e}"
            rows.append([label, r["batch"], f"{r['parameters'] / 1e6:.2f} M", f"{r['eager']:,.0f}", r["variant"] or "-",
                         other, speedup, diff, "; ".join(r["warnings"])[:80] or "-"])
            print(f"{label}: eager {r['eager']:,.0f} img/s, {r['variant']} {other} ({speedup}), loss diff {diff}", flush=True)
    print()
    print(table(["model", "batch", "params", "eager img/s", "against", "img/s", "speedup", "max rel loss diff (10 steps)", "warnings"], rows))
    payload = {"device": str(device), "quick": args.quick, "results": results}
    if os.environ.get("OUT"):
        name = "graph_step" + ("_compile" if args.compile else "") + ("_paper" if args.paper else "")
        out = Path(os.environ["OUT"]) / f"{name}.json"
        out.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
        print(f"\nwrote {out}")
    elif not args.quick:
        suffix = ("_compile" if args.compile else "") + ("_paper" if args.paper else "") + \
            ("" if device.type == "cpu" else "-" + torch.cuda.get_device_name().split()[-1].lower())
        print(f"\nwrote {save('graph_step' + suffix, payload)}")


if __name__ == "__main__":
    main()
