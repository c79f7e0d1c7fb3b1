"""Speed settings of the training step (workbench.accel): ``[train] compile`` trains like the
eager loss and falls back to it, with one warning, where torch.compile fails; ``[train] bf16``
accepts "auto" and booleans, and "auto" decides by model size on CUDA only."""
from __future__ import annotations

import functools

import pytest
import torch

import models
from workbench import accel
from workbench import events as ev
from workbench.config import parse_config
from workbench.errors import UserError
from tests.conftest import train_losses

FAST = ["train.max_steps=5", "train.log_every=1", "train.val_every=0", "train.checkpoint_every=0",
        "sample.every=0", "eval.test=false", "model.num_masks=1"]


@functools.cache
def _inductor_reason() -> str | None:
    """Why torch.compile (inductor, on this CPU) cannot run here, or None where it can."""
    try:
        f = torch.compile(lambda t: torch.sin(t) * 2)
        if not torch.allclose(f(torch.ones(3)), torch.sin(torch.ones(3)) * 2):
            return "torch.compile gave a wrong result on a one-line function"
    except Exception as e:  # noqa: BLE001 - no C compiler, no inductor on this platform, ...
        return f"torch.compile does not work here ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
    return None


def _train(preset, out, overrides=()):
    return train_losses(preset, out, [*FAST, *overrides])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])  # on a CPU, reduce-overhead has no CUDA graphs
def test_compiled_training_equals_eager(tiny_preset, isolated, mode):
    reason = _inductor_reason()
    if reason:
        pytest.skip(reason)
    from torch._dynamo.utils import counters

    _, eager, eager_losses, _ = _train(tiny_preset, isolated / "eager")
    counters.clear()
    run, compiled, losses, warnings = _train(tiny_preset, isolated / "compiled", [f"train.compile={mode}"])
    assert warnings == []
    assert counters["stats"]["unique_graphs"] >= 1  # it really compiled
    assert len(losses) == len(eager_losses) == 5
    # ~540 nats per image: one float32 ulp there is 6e-5 nats, so "equal" is a few ulps (1e-6
    # relative, 7e-7 nats per dimension); inductor sums in another order than eager.
    assert losses == pytest.approx(eager_losses, rel=1e-6, abs=1e-5)
    weights = run.load_checkpoint("last")["model"]
    assert list(weights) == list(compiled.model.state_dict())  # the model's own names, no _orig_mod.
    for key, value in eager.model.state_dict().items():
        assert torch.allclose(weights[key], value, atol=1e-5), key


def _compile_raises(*args, **kwargs):
    raise RuntimeError("no C compiler\nfound")


def test_compile_failing_at_once_warns_once_and_trains_eagerly(tiny_preset, isolated, monkeypatch):
    _, eager, eager_losses, _ = _train(tiny_preset, isolated / "eager")
    monkeypatch.setattr(torch, "compile", _compile_raises)
    _, trainer, losses, warnings = _train(tiny_preset, isolated / "fallback", ["train.compile=reduce-overhead"])
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "torch.compile failed" in warnings[0] and "no C compiler found" in warnings[0]
    assert losses == eager_losses  # the eager path itself, bit for bit
    for key, value in eager.model.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[key], value), key


def test_compile_failing_at_the_first_call_warns_once_and_trains_eagerly(tiny_preset, isolated, monkeypatch):
    _, eager, eager_losses, _ = _train(tiny_preset, isolated / "eager")
    calls = []

    def lazy_failure(fn, mode=None):
        def compiled(x, y=None):
            calls.append(mode)
            parts = fn(x, y)  # like a backward that fails to compile after a forward that ran
            parts["loss"].backward()
            raise RuntimeError("inductor: C++ compile error")
        return compiled

    monkeypatch.setattr(torch, "compile", lazy_failure)
    _, trainer, losses, warnings = _train(tiny_preset, isolated / "fallback", ["train.compile=default"])
    assert calls == ["default"]  # tried once, then eager for good
    assert len(warnings) == 1 and "C++ compile error" in warnings[0]
    assert losses == eager_losses  # the failed attempt's gradients were dropped
    for key, value in eager.model.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[key], value), key


def test_after_a_compiled_step_a_model_error_propagates():
    w = torch.ones(2, requires_grad=True)
    state = {"calls": 0}

    def loss(x, y=None):
        state["calls"] += 1
        if state["calls"] > 1:
            raise ValueError("labels out of range")
        return {"loss": (w * x).sum()}

    warned = []
    step = accel.LossStep(loss, "off", params=[w], warn=warned.append)
    step.compiled = loss  # as if torch.compile had returned it: no compiler needed here
    step(torch.ones(2))
    assert torch.equal(w.grad, torch.ones(2))
    with pytest.raises(ValueError, match="labels out of range"):
        step(torch.ones(2))
    assert warned == [] and step.is_compiled


def test_compile_setting_is_validated():
    base = '[model]\nname = "made"\n[train]\nmax_steps = 1\n'
    assert parse_config(base).train.compile == "off"
    for mode in accel.COMPILE_MODES:
        assert parse_config(base, overrides=[f"train.compile={mode}"]).train.compile == mode
    with pytest.raises(UserError, match="compile.*allowed: off, default, reduce-overhead"):
        parse_config(base, overrides=["train.compile=max-autotune"])
    with pytest.raises(ValueError, match="compile mode"):
        accel.LossStep(lambda x, y: {}, "max")


def test_bf16_setting_accepts_auto_and_booleans():
    base = '[model]\nname = "made"\n[train]\nmax_steps = 1\n'
    assert parse_config(base).train.bf16 == "auto"
    assert parse_config(base + "bf16 = true").train.bf16 is True
    assert parse_config(base + "bf16 = false").train.bf16 is False
    assert parse_config(base, overrides=["train.bf16=auto"]).train.bf16 == "auto"
    for bad in ("1", "0", '"yes"', '"Auto"'):
        with pytest.raises(UserError, match='bf16 = .* is not allowed; allowed: "auto", true, false'):
            parse_config(base + f"bf16 = {bad}")


def _params(name, **hparams) -> int:
    return sum(p.numel() for p in models.build(name, (1, 28, 28), 2, **hparams).parameters())


def test_bf16_auto_follows_the_h200_measurements():
    # Models of benchmarks/results/gpu_check-h200.json, and which precision trained faster there.
    measured = [
        (_params("pixelcnn", hidden_channels=64, num_layers=7), False),
        (_params("made", hidden=[1000]), False),
        (_params("pixelcnn", gated=True, hidden_channels=128, num_layers=10), False),
        (7_800_000, False),   # Diagonal BiLSTM, the CIFAR-10 paper preset
        (64_000_000, True),   # gated PixelCNN, the CIFAR-10 paper preset
        (76_560_784, True),   # MADE 2x8000 on binarised 28x28 (too big to build in a test)
    ]
    for params, faster_in_bf16 in measured:
        assert accel.use_bf16("auto", "cuda", params) is faster_in_bf16, params
        assert accel.use_bf16("auto", "cpu", params) is False  # autocast is for CUDA only
        assert accel.use_bf16(True, "cuda", params) is True and accel.use_bf16(False, "cuda", params) is False
        assert accel.use_bf16(True, "cpu", params) is False


def test_the_eager_fp32_step_is_the_plain_loop():
    torch.manual_seed(0)
    model = models.build("made", (1, 3, 3), 2, hidden=[8])
    x = torch.randint(0, 2, (5, 1, 3, 3)).float()
    step = accel.LossStep(model.loss, "off", params=list(model.parameters()))
    parts = step(x)
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    expected = model.loss(x)
    expected["loss"].backward()
    assert torch.equal(parts["loss"], expected["loss"])
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))


def test_the_headless_runner_prints_the_warning(capsys):
    from workbench.headless import HeadlessReporter

    with HeadlessReporter(live=False) as report:
        report(ev.Warned(3, "torch.compile failed (RuntimeError: no C compiler); training continues without compiling"))
    assert capsys.readouterr().out == "warning: torch.compile failed (RuntimeError: no C compiler); training continues without compiling\n"
