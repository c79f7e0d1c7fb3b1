"""The training loop: run folder contents, events, exact resume after an interruption or a
crash, and failures (NaN loss, corrupt checkpoint) that lose nothing."""
from __future__ import annotations

import json

import pytest
import torch

from workbench import events as ev
from workbench.config import load_config
from workbench.errors import UserError
from workbench.runs import Run, open_run
from workbench.train import Trainer


def _train(config, out, subscriber=None, run=None, resume=False):
    run = run or Run.create(config, out)
    trainer = Trainer(run.config, run, resume=resume)
    if subscriber:
        trainer.subscribe(lambda e: subscriber(e, trainer))
    return run, trainer, trainer.fit()


def _weights(run, which="last"):
    return run.load_checkpoint(which)["model"]


def test_a_run_writes_its_folder_and_emits_events(tiny_preset, isolated):
    seen = []
    run, _, done = _train(load_config(tiny_preset), isolated / "runs", lambda e, t: seen.append(e))
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "Started" and kinds[-1] == "Finished" and done.reason == "completed"
    assert {"Step", "Evaluated", "Samples", "Checkpointed"} <= set(kinds)
    for name in ("config.toml", "metrics.jsonl", "status.json", "eval.json", "checkpoints/last.pt",
                 "checkpoints/best.pt", "samples/step-12.png", "samples/step-24.png"):
        assert (run.path / name).exists(), name
    assert json.loads((run.path / "status.json").read_text())["state"] == "finished"
    results = run.read_eval()
    assert results["likelihood"] == "exact" and results["test_nll"] > 0
    assert results["test_bpd"] == pytest.approx(results["test_nll"] / (784 * 0.6931471805599453))
    rows = run.read_metrics()
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(2, 25, 2))
    assert all({"loss", "nll", "lr", "images_per_s"} <= r.keys() for r in rows if r["split"] == "train")
    assert [r["step"] for r in rows if r["split"] == "val"] == [6, 12, 18, 24]
    assert open_run(run.path).config == run.config


@pytest.mark.parametrize("model", ["made", "vae"])  # the VAE draws noise every step: RNG state must resume too
def test_resume_after_cancel_ends_with_the_same_weights(tiny_preset, isolated, model):
    if model == "vae":
        text = tiny_preset.read_text().replace('name = "made"\nhidden = [32]\nnum_masks = 2', 'name = "vae"\narch = "mlp"\nhidden = 32\nlatent_dim = 4\niw_samples = 2')
        tiny_preset.write_text(text)
    config = load_config(tiny_preset)
    assert config.model.name == model
    straight, _, _ = _train(config, isolated / "a")

    def cancel_at_15(event, trainer):
        if isinstance(event, ev.Step) and event.step == 14:
            trainer.cancel.set()

    run, _, done = _train(config, isolated / "b", cancel_at_15)
    assert done.reason == "cancelled" and done.step == 14
    assert open_run(run.path).status()["state"] == "cancelled"
    run, _, done = _train(config, None, run=open_run(run.path), resume=True)
    assert done.reason == "completed"
    for (name, a), b in zip(_weights(straight).items(), _weights(run).values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    steps = [(r["split"], r["step"]) for r in run.read_metrics()]
    assert steps == [(r["split"], r["step"]) for r in straight.read_metrics()], "every step logged exactly once"
    assert run.read_eval()["test_nll"] == pytest.approx(straight.read_eval()["test_nll"], rel=1e-6)


def test_crash_mid_run_resumes_from_the_last_checkpoint_with_nothing_lost(tiny_preset, isolated):
    config = load_config(tiny_preset)
    straight, _, _ = _train(config, isolated / "a")

    def crash(event, trainer):
        if isinstance(event, ev.Step) and event.step == 16:  # last checkpoint at 12; 14 and 16 logged
            raise RuntimeError("power cut")

    run = Run.create(config, isolated / "b")
    with pytest.raises(RuntimeError, match="power cut"):
        _train(config, None, crash, run=run)
    assert run.load_checkpoint("last")["step"] == 12
    assert max(r["step"] for r in run.read_metrics()) == 16
    _train(config, None, run=open_run(run.path), resume=True)
    for a, b in zip(_weights(straight).values(), _weights(run).values()):
        assert torch.equal(a, b)
    assert [r["step"] for r in run.read_metrics()] == [r["step"] for r in straight.read_metrics()]


def test_nan_loss_fails_with_advice_and_keeps_the_last_good_checkpoint(tiny_preset, isolated, monkeypatch):
    from models.made import MADE

    config = load_config(tiny_preset)
    real_loss = MADE.loss
    calls = {"n": 0}

    def poisoned(self, x, y=None):
        calls["n"] += 1
        out = real_loss(self, x, y)
        if calls["n"] >= 9:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(MADE, "loss", poisoned)
    failures = []
    run = Run.create(config, isolated / "runs")
    with pytest.raises(UserError) as info:
        _train(config, None, lambda e, t: failures.append(e) if isinstance(e, ev.Failed) else None, run=run)
    message = str(info.value)
    assert info.value.exit_code == 1 and "\n" not in message
    assert "loss became nan by step 10" in message and "genwb run --resume" in message and "train.lr" in message
    assert failures and failures[0].message == message
    assert run.status()["state"] == "failed" and run.status()["error"] == message
    good = run.load_checkpoint("last")
    assert good["step"] == 6 and all(torch.isfinite(t).all() for t in good["model"].values() if t.is_floating_point())


def test_corrupt_checkpoint_is_a_one_line_error(tiny_preset, isolated):
    run, _, _ = _train(load_config(tiny_preset), isolated / "runs")
    path = run.checkpoint_path("last")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="checkpoint is corrupt or unreadable .*use checkpoints/best.pt") as info:
        Trainer(run.config, open_run(run.path), resume=True).fit()
    assert "\n" not in str(info.value)
    # The best checkpoint still loads, and weights_only=True refuses pickled code.
    assert open_run(run.path).load_model("best") is not None
    import pickle, os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(UserError, match="corrupt or unreadable"):
        run.load_checkpoint("last")


def test_lr_schedule_warmup_then_cosine():
    from workbench.config import TrainConfig
    from workbench.train import _lr_factor

    f = _lr_factor(TrainConfig(schedule="cosine", warmup_steps=10, max_steps=110), 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-12)


def test_out_of_memory_is_a_one_line_error_with_the_fix(tiny_preset, isolated, monkeypatch):
    from models.made import MADE

    def oom(self, x, y=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(MADE, "loss", oom)
    run = Run.create(load_config(tiny_preset), isolated / "runs")
    with pytest.raises(UserError, match=r"out of GPU memory at step 1 \(training\) with data.batch_size = 20; lower it and resume: genwb run --resume .* --set data.batch_size=10$") as info:
        _train(run.config, None, run=run)
    assert info.value.exit_code == 1 and run.status()["state"] == "failed"


def test_epochs_and_early_stopping(tiny_preset, isolated, monkeypatch):
    config = load_config(tiny_preset, ["train.max_steps=0", "train.epochs=2"])
    run, _, done = _train(config, isolated / "a")
    assert done.step == 2 * (200 // 20) and done.reason == "completed"
    # Validation NLL that never improves after the first check: stop after 2 more.
    real = Trainer.evaluate_nll
    nll = iter([100.0, 101.0, 102.0, 103.0])
    monkeypatch.setattr(Trainer, "evaluate_nll", lambda self, x, y, limit=0: {"nll": next(nll), "bpd": 0.1} if x is self.splits.val_x else real(self, x, y))
    config = load_config(tiny_preset, ["train.early_stopping=2", "train.val_every=2"])
    run, _, done = _train(config, isolated / "b")
    assert done.reason == "early-stopped" and done.step == 6
    assert run.status()["state"] == "early-stopped" and "test_nll" in run.read_eval()
