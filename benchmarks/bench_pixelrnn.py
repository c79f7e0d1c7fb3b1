"""PixelRNN (Row LSTM, Diagonal BiLSTM) at 28x28, binarised: training throughput, log_prob
throughput, and sampling time, incremental against naive side by side.

"ops per training step" counts the aten operators that do work (views and bare allocations
left out) in one forward + backward of ``model.loss`` at batch 32: on a GPU each is about one
kernel launch, which is what a small-batch training step is bound by.

Naive sampling (``sample_naive``) is one full forward pass per subpixel, 784 passes for a 28x28
image. Timing all 784 takes minutes per model on a CPU, so by default the naive time is the
median time of one full pass at the same batch, times 784 (the loop adds only indexing); pass
--full-naive to run the real thing. The output says which was done.

    python benchmarks/bench_pixelrnn.py [--quick] [--full-naive] [--threads N]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402
from benchmarks.common import arguments, machine, parse, save, table, timed  # noqa: E402

# The presets' sizes (presets/row_lstm.toml, presets/diagonal_bilstm.toml).
CONFIGS = {
    "row_lstm": {"hidden": 32, "layers": 4, "kernel_size": 3, "head_channels": 64},
    "diagonal_bilstm": {"hidden": 16, "layers": 3, "head_channels": 64},
}
SHAPE = (1, 28, 28)


def train_step_fn(model, batch: int):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.bernoulli(torch.full((batch, *SHAPE), 0.3))

    def step():
        opt.zero_grad(set_to_none=True)
        model.loss(x)["loss"].backward()
        opt.step()

    return step


class _CountOps(TorchDispatchMode):
    """Counts the aten operators dispatched below autograd, views and allocations apart."""

    ALLOCATIONS = {"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided"}

    def __init__(self):
        super().__init__()
        self.ops = self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        returns = func._schema.returns
        view = returns and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)
        if view or func.overloadpacket.__name__ in self.ALLOCATIONS:
            self.views += 1
        else:
            self.ops += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(model, batch: int) -> tuple[int, int]:
    """(working operators, views and allocations) of one model.loss(x) forward + backward."""
    x = torch.bernoulli(torch.full((batch, *SHAPE), 0.3))
    model.loss(x)["loss"].backward()
    with _CountOps() as count:
        model.loss(x)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return count.ops, count.views


def bench_model(name: str, hparams: dict, args) -> dict:
    torch.manual_seed(0)
    model = models.build(name, SHAPE, 2, **hparams)
    repeats = 2 if args.quick else 5
    batch = 32
    ops, views = ops_per_step(model, batch)
    step_s = timed(train_step_fn(model, batch), repeats=repeats, warmup=1)
    model.eval()
    x = torch.bernoulli(torch.full((250, *SHAPE), 0.3))
    with torch.inference_mode():
        eval_s = timed(lambda: model.log_prob(x), repeats=repeats, warmup=1)

    n = 16 if args.quick else 64
    noise = torch.rand(n, *SHAPE)
    inc_s = timed(lambda: model.sample(n, noise=noise), repeats=1 if args.quick else 3, warmup=0)
    dims = model.num_dims
    if args.full_naive:
        t = time.perf_counter()
        naive_images = model.sample_naive(n, noise=noise)
        naive_s, naive_how = time.perf_counter() - t, f"measured, {dims} passes"
        assert torch.equal(naive_images, model.sample(n, noise=noise)), "incremental != naive"
    else:
        xs = torch.zeros(n, *SHAPE)
        with torch.inference_mode():
            pass_s = timed(lambda: model.logits(xs), repeats=3 if args.quick else 7, warmup=1)
        naive_s, naive_how = pass_s * dims, f"extrapolated: {pass_s * 1e3:.0f} ms/pass x {dims} passes"
    return {
        "model": name, "hparams": hparams, "params": sum(p.numel() for p in model.parameters()),
        "train_batch": batch, "train_ops_per_step": ops, "train_views_per_step": views, "train_step_s": step_s, "train_images_per_s": batch / step_s,
        "log_prob_images_per_s": len(x) / eval_s,
        "sample_n": n, "incremental_s": inc_s, "naive_s": naive_s, "naive_how": naive_how,
        "speedup": naive_s / inc_s,
    }


def main() -> None:
    parser = arguments(__doc__, "fewer repeats, 16 samples instead of 64")
    parser.add_argument("--full-naive", action="store_true", help="run all 784 naive passes instead of extrapolating")
    args = parse(parser)
    results = [bench_model(name, hp, args) for name, hp in CONFIGS.items()]

    print(f"machine: {machine()}\n")
    print(table(["model (28x28, binarised)", "params", "ops per training step", "train, batch 32", "log_prob"],
                [[f"{r['model']} {r['hparams']}", f"{r['params']:,}", f"{r['train_ops_per_step']:,}",
                  f"{r['train_images_per_s']:.1f} img/s "
                  f"({r['train_step_s']:.2f} s/step)", f"{r['log_prob_images_per_s']:.1f} img/s"] for r in results]))
    print()
    print(table(["sampling", "incremental", "naive", "speed-up", "naive timing"],
                [[f"{r['model']}, {r['sample_n']} images", f"{r['incremental_s']:.2f} s", f"{r['naive_s']:.0f} s",
                  f"{r['speedup']:.0f}x", r["naive_how"]] for r in results]))
    print(f"\nwritten to {save('pixelrnn', {'quick': args.quick, 'results': results})}")


if __name__ == "__main__":
    main()
