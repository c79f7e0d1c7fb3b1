"""Hostile but fair use of the engine (issue 8): every bad input is one line and an exit code
with no run folder left behind, crafted checkpoints and full disks are one line too, run names
stay inside --out, and a run stopped at any moment (SIGTERM, kill -9, Ctrl-C while loading,
a double Ctrl-C) resumes with every metric logged exactly once."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.conftest import TINY_PRESET, offline_workspace, train_tiny
from workbench import events as ev
from workbench.cli import main
from workbench.config import load_config
from workbench.errors import UserError
from workbench.runs import Run, open_run
from workbench.signals import StopSignals
from workbench.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "train.max_steps=4", "--set", "sample.every=0", "--set", "eval.test=false"]


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result, code=2):
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "Usage:" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    if code == 1:  # a run that failed: its progress lines, then the one line
        lines = lines[-1:] if not any(line.startswith("error: ") for line in lines[:-1]) else lines
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _folders(path: Path) -> list[Path]:
    return sorted(path.iterdir()) if path.exists() else []


def _steps(run_dir: Path, split="train") -> list[int]:
    return [r["step"] for r in open_run(run_dir).read_metrics() if r["split"] == split]


# -- bad input: one line, exit 2, no run folder ---------------------------------------------------
BAD_OVERRIDES = [
    ("model.hidden=[[10]]", "hidden[0] must be an integer"),
    ("model.hidden=[10.7]", "hidden[0] must be an integer, got 10.7"),
    ("model.hidden=[]", "hidden must list at least one positive layer width"),
    ("model.num_masks=0", "num_masks must be at least 1"),
    ("model.order=sideways", "order must be 'natural' or 'random'"),
    ("train.beta1=1.0", "beta1 = 1.0 must be below 1.0"),
    ("train.beta2=1.5", "beta2 = 1.5 must be below 1.0"),
    ("train.lr=nan", "lr must be a finite number, got nan"),
    ("train.lr=inf", "lr must be a finite number, got inf"),
    ("train.weight_decay=inf", "weight_decay must be a finite number"),
    ("data.val_size=240", "val_size = 240 leaves no training images (240 in fashion-mnist's training split)"),
    ("data.dataset=kmnist", "dataset 'kmnist' not found"),
    ("sample.n=100000000", "n = 100000000 is above its maximum 10000"),
    ("train.max_steps=2\nx = 1", "max_steps must be an integer"),
    ("run.seed=1979-05-27", "seed must be an integer, got 1979-05-27"),
]


@pytest.mark.parametrize("override,message", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_overrides_are_one_line_and_leave_no_folder(tiny_preset, isolated, override, message):
    line = _one_line_error(_cli("run", tiny_preset, "--out", isolated / "runs", "--set", override))
    assert message in line
    assert _folders(isolated / "runs") == []


BAD_PRESETS = {
    "binary garbage": (lambda p: p.write_bytes(bytes(range(256)) * 4), "not UTF-8 text"),
    "latin-1 comment": (lambda p: p.write_bytes(TINY_PRESET.encode() + "# café\n".encode("latin-1")), "not UTF-8 text (byte 0xe9"),
    "a folder": (lambda p: p.mkdir(), "is a folder, not a preset file"),
    "a date as a value": (lambda p: p.write_text(TINY_PRESET.replace("lr = 3e-3", "lr = 1979-05-27")), "lr must be a number, got 1979-05-27"),
    "a table as a value": (lambda p: p.write_text(TINY_PRESET.replace("lr = 3e-3", "lr = {a = 1}")), "lr must be a number"),
    "a run reference that is a number": (lambda p: p.write_text(TINY_PRESET.replace('name = "made"', 'name = "vqvae_prior"\nvqvae_run = 3').replace("hidden = [32]\nnum_masks = 2", "")), "vqvae_run must name a run folder"),
}


@pytest.mark.parametrize("case", BAD_PRESETS, ids=list(BAD_PRESETS))
def test_bad_preset_files_are_one_line(tiny_data, isolated, case):
    write, message = BAD_PRESETS[case]
    preset = isolated / "bad.toml"
    write(preset)
    line = _one_line_error(_cli("run", preset, "--out", isolated / "runs"))
    assert message in line
    assert _folders(isolated / "runs") == []


def test_a_preset_with_a_byte_order_mark_is_fine(tiny_preset, isolated):
    tiny_preset.write_bytes(b"\xef\xbb\xbf" + tiny_preset.read_bytes())
    assert load_config(tiny_preset).model.name == "made"


def test_usage_errors_are_one_line(tiny_preset, isolated):
    out_file = isolated / "file"
    out_file.write_text("x")
    assert "cannot make a run folder there" in _one_line_error(_cli("run", tiny_preset, "--out", out_file))
    assert "not a run folder" in _one_line_error(_cli("run", "--resume", tiny_preset))
    assert "use it with --resume" in _one_line_error(_cli("run", tiny_preset, "--checkpoint", "best"))
    run = Run.create(load_config(tiny_preset), isolated / "runs")
    assert "best.pt: no such checkpoint" in _one_line_error(_cli("run", "--resume", run.path, "--checkpoint", "best"))
    assert run.status()["state"] == "created"
    assert "'abc' is not a valid integer" in _one_line_error(_cli("eval", isolated, "-n", "abc"))
    assert "use at least 10" in _one_line_error(_cli("eval", isolated, "-n", "5"))
    assert "use at most 1,000,000" in _one_line_error(_cli("eval", isolated, "-n", "2000000"))
    assert "--batch-size 0 must be at least 1" in _one_line_error(_cli("eval", isolated, "--batch-size", "0"))
    assert "No such option" in _one_line_error(_cli("run", tiny_preset, "--bogus"))


# -- hostile run names ----------------------------------------------------------------------------
NAMES = ["../escaped", "../../../../deep", "/tmp/absolute", "a/b/c", "line\nbreak", "..", ".", "", "~root", "tab\there\x1b[31m"]


@pytest.mark.parametrize("name", NAMES, ids=[repr(n) for n in NAMES])
def test_hostile_run_names_stay_one_safe_folder_inside_out(tiny_preset, isolated, name):
    out = isolated / "deep" / "runs"
    before = sorted(str(p) for p in isolated.rglob("*"))
    run = Run.create(load_config(tiny_preset, [f"run.name={json.dumps(name)}"]), out)
    assert run.path.parent == out and [p.name for p in out.iterdir()] == [run.path.name]
    assert run.path.name.isprintable() and "/" not in run.path.name and not run.path.name.startswith(".")
    new = sorted(set(str(p) for p in isolated.rglob("*")) - set(before))
    assert all(p.startswith(str(run.path)) or p in (str(out), str(out.parent)) for p in new), new


# -- crafted checkpoints: sample, eval and resume say one line ------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (4 steps), trained once for the module and copied per test."""
    with offline_workspace(tmp_path_factory.mktemp("trained")) as base:
        (base / "tiny.toml").write_text(TINY_PRESET)
        return train_tiny(base / "tiny.toml", base / "runs",
                          ["train.max_steps=4", "train.val_every=2", "sample.every=0", "eval.test=false"])


@pytest.fixture
def run_copy(trained, tiny_data, isolated):
    return Path(shutil.copytree(trained, isolated / "run"))


def _bare_tensor(run_dir):
    torch.save(torch.zeros(3), run_dir / "checkpoints" / "best.pt")


def _missing_key(run_dir):
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    state["model"].pop(next(iter(state["model"])))
    torch.save(state, run_dir / "checkpoints" / "best.pt")


def _wrong_shape(run_dir):
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    key = next(k for k, v in state["model"].items() if v.ndim == 2)
    state["model"][key] = torch.zeros(3, 3)
    torch.save(state, run_dir / "checkpoints" / "best.pt")


def _other_model(run_dir):
    text = (run_dir / "config.toml").read_text().replace('name = "made"', 'name = "nade"')
    lines = [line for line in text.splitlines() if not line.startswith(("hidden", "num_masks", "order", "seed = 0"))]
    (run_dir / "config.toml").write_text("\n".join(lines) + "\n")


def _pickled_code(run_dir):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (run_dir / "checkpoints" / "best.pt").write_bytes(pickle.dumps({"model": Evil()}))


CRAFTED = {"bare tensor": (_bare_tensor, "not a genwb checkpoint"), "missing key": (_missing_key, "Missing key"),
           "wrong shape": (_wrong_shape, "size mismatch"), "config edited to another model": (_other_model, "does not fit the model"),
           "pickled code": (_pickled_code, "corrupt or unreadable")}


@pytest.mark.parametrize("case", CRAFTED, ids=list(CRAFTED))
def test_crafted_checkpoints_are_one_line_for_load_model_and_eval(run_copy, case):
    craft, message = CRAFTED[case]
    craft(run_copy)
    with pytest.raises(UserError, match=message) as info:
        open_run(run_copy).load_model("best")
    assert "\n" not in str(info.value)
    assert message in _one_line_error(_cli("eval", run_copy, "-n", "10", "--device", "cpu"))


def test_a_corrupt_last_checkpoint_resumes_from_best_as_advised(run_copy):
    (run_copy / "checkpoints" / "last.pt").write_bytes(b"garbage")
    line = _one_line_error(_cli("run", "--resume", run_copy, "--set", "train.max_steps=6"))
    assert "pass --checkpoint best" in line
    result = _cli("run", "--resume", run_copy, "--checkpoint", "best", "--set", "train.max_steps=6")
    assert result.exit_code == 0, result.output
    assert _steps(run_copy) == [2, 4, 6] and open_run(run_copy).load_checkpoint("last")["step"] == 6


def test_resume_overrides_that_do_not_fit_leave_config_untouched(run_copy):
    before = (run_copy / "config.toml").read_bytes()
    line = _one_line_error(_cli("run", "--resume", run_copy, "--set", "model.hidden=[500]"))
    assert "overrides do not fit this checkpoint" in line
    assert (run_copy / "config.toml").read_bytes() == before
    result = _cli("run", "--resume", run_copy, "--set", "train.max_steps=6", "--set", "train.lr=1e-4")
    assert result.exit_code == 0, result.output
    assert open_run(run_copy).config.train.lr == 1e-4 and _steps(run_copy) == [2, 4, 6]


def test_metrics_lines_that_are_not_objects_are_skipped(run_copy):
    with open(run_copy / "metrics.jsonl", "a") as f:
        f.write('[1, 2]\n"text"\n3\nnull\n{"step": "x"}\n{"step": 4, "split"\n')
    rows = open_run(run_copy).read_metrics()
    assert rows and all(isinstance(r, dict) for r in rows)
    result = _cli("run", "--resume", run_copy, "--set", "train.max_steps=6")
    assert result.exit_code == 0, result.output
    assert _steps(run_copy) == [2, 4, 6]


# -- resuming: no checkpoint, best, lr overrides --------------------------------------------------
def test_resume_without_a_checkpoint_starts_at_step_0_with_the_saved_config(tiny_preset, isolated):
    config = load_config(tiny_preset, ["train.max_steps=4", "train.val_every=0", "sample.every=0", "eval.test=false"])
    run = Run.create(config, isolated / "runs")
    run.append_metrics({"step": 2, "split": "train", "loss": 1.0})  # from the life before the kill
    done = Trainer(open_run(run.path).config, open_run(run.path), resume=True).fit()
    assert done.reason == "completed" and done.step == 4
    assert _steps(run.path) == [2, 4] and run.status()["state"] == "finished"


def test_stop_state_names_the_state_a_cancel_writes(tiny_preset, isolated):
    config = load_config(tiny_preset, ["eval.test=false"])
    run = Run.create(config, isolated / "runs")
    trainer = Trainer(config, run)
    trainer.stop_state = "paused"
    trainer.subscribe(lambda e: trainer.cancel.set() if isinstance(e, ev.Step) and e.step == 4 else None)
    assert trainer.fit().reason == "cancelled"
    assert run.status() | {"updated": None} == {"state": "paused", "step": 4, "error": None, "updated": None}


# -- NaN: advice that works -----------------------------------------------------------------------
def test_nan_advice_names_a_good_checkpoint_and_a_command_that_works(tiny_preset, isolated, monkeypatch):
    from models.made import MADE

    real_loss = MADE.loss
    calls = {"n": 0}

    def poisoned(self, x, y=None):
        calls["n"] += 1
        out = real_loss(self, x, y)
        return {**out, "loss": out["loss"] * float("nan")} if calls["n"] >= 9 else out

    monkeypatch.setattr(MADE, "loss", poisoned)
    result = _cli("run", tiny_preset, "--out", isolated / "runs", "--set", "sample.every=0")
    line = _one_line_error(result, code=1)
    (run_dir,) = _folders(isolated / "runs")
    assert "loss became nan by step 10" in line and "the checkpoint at step 6" in line
    good = open_run(run_dir).load_checkpoint("last")
    assert good["step"] == 6 and all(torch.isfinite(t).all() for t in good["model"].values() if t.is_floating_point())
    command = line.split(": genwb ", 1)[1].split()
    assert command[:3] == ["run", "--resume", str(run_dir)] and "train.lr=0.0003" in command
    monkeypatch.setattr(MADE, "loss", real_loss)
    result = _cli(*command)
    assert result.exit_code == 0, result.output
    assert open_run(run_dir).config.train.lr == pytest.approx(3e-4)
    assert _steps(run_dir) == list(range(2, 25, 2))


def test_no_checkpoint_is_written_from_weights_that_are_not_finite(tiny_preset, isolated):
    config = load_config(tiny_preset, ["train.max_steps=6", "eval.test=false", "sample.every=0"])
    run = Run.create(config, isolated / "runs")
    trainer = Trainer(config, run)
    trainer.fit()
    with torch.no_grad():
        next(trainer.model.parameters())[0].fill_(float("inf"))  # diverged weights whose loss was not logged yet
    trainer.step = 7
    with pytest.raises(UserError, match=r"^the weights stopped being finite by step 7; .*from the checkpoint at step 6: genwb run --resume "):
        trainer._checkpoint("last")
    assert run.load_checkpoint("last")["step"] == 6


# -- memory: sampling in batches, advice naming the right setting ---------------------------------
def test_training_samples_are_drawn_in_eval_batches(tiny_preset, isolated, monkeypatch):
    from models.made import MADE

    sizes = []
    real_sample = MADE.sample
    monkeypatch.setattr(MADE, "sample", lambda self, n, *a, **k: sizes.append(n) or real_sample(self, n, *a, **k))
    config = load_config(tiny_preset, ["train.max_steps=2", "sample.n=7", "eval.batch_size=3", "eval.test=false"])
    run = Run.create(config, isolated / "runs")
    seen = []
    trainer = Trainer(config, run)
    trainer.subscribe(lambda e: seen.append(e) if isinstance(e, ev.Samples) else None)
    trainer.fit()
    assert sizes == [3, 3, 1] and seen[0].images.shape[0] == 7


def test_out_of_memory_while_sampling_blames_eval_batch_size(tiny_preset, isolated, monkeypatch):
    from models.made import MADE

    def oom(self, n, *a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999 bytes")

    monkeypatch.setattr(MADE, "sample", oom)
    config = load_config(tiny_preset, ["train.max_steps=2"])
    with pytest.raises(UserError, match=r"out of memory at step 2 \(sampling\) with eval.batch_size = 50; .*--set eval.batch_size=25$"):
        Trainer(config, Run.create(config, isolated / "runs")).fit()


# -- a full disk ----------------------------------------------------------------------------------
def _full_disk_for(patch: pytest.MonkeyPatch, suffixes):
    real = os.replace

    def replace(src, dst, *a, **k):
        if str(dst).endswith(suffixes):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *a, **k)

    patch.setattr(os, "replace", replace)


def test_a_full_disk_while_checkpointing_is_one_line_and_loses_nothing(tiny_preset, isolated):
    config = load_config(tiny_preset, ["sample.every=0"])
    run = Run.create(config, isolated / "runs")
    trainer = Trainer(config, run)
    disk = pytest.MonkeyPatch()
    try:
        trainer.subscribe(lambda e: _full_disk_for(disk, (".pt",)) if isinstance(e, ev.Checkpointed) and e.step == 6 and e.path.name == "last.pt" else None)
        with pytest.raises(UserError) as info:
            trainer.fit()
        message = str(info.value)
        assert message.startswith("no space left on device writing checkpoint at step 12; free space and resume: genwb run --resume ")
        assert info.value.exit_code == 1 and run.status()["state"] == "failed" and run.status()["error"] == message
        assert sorted(p.name for p in (run.path / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no temp file
        assert run.load_checkpoint("last")["step"] == 6

        _full_disk_for(disk, (".pt", ".jsonl", ".json"))  # still full at the resume
        line = _one_line_error(_cli("run", "--resume", run.path), code=1)
        assert line.startswith("error: no space left on device rewriting") and "free space and resume" in line
        assert not list(run.path.rglob(".*.tmp"))
    finally:
        disk.undo()
    result = _cli("run", "--resume", run.path, "--set", "sample.every=0", "--set", "eval.test=false")
    assert result.exit_code == 0, result.output
    assert _steps(run.path) == list(range(2, 25, 2))


def test_a_metrics_append_that_fails_is_one_line(tiny_preset, isolated, monkeypatch):
    import workbench.runs as runs

    def full(self, row):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.metrics_path))

    monkeypatch.setattr(runs.Run, "append_metrics", full)
    line = _one_line_error(_cli("run", tiny_preset, "--out", isolated / "runs"), code=1)
    assert line.startswith("error: no space left on device (") and "metrics.jsonl) at step 2; free space and resume: genwb run --resume" in line
    (run_dir,) = _folders(isolated / "runs")
    assert open_run(run_dir).status()["state"] == "failed"


# -- signals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig,code", [(signal.SIGHUP, 129), (signal.SIGTERM, 143)])
def test_stop_signals_call_back_once_with_the_shell_exit_code(sig, code):
    calls = []
    with StopSignals(calls.append) as stop:
        os.kill(os.getpid(), sig)
        os.kill(os.getpid(), sig)  # a second SIGTERM/SIGHUP: a stop is already under way
        time.sleep(0.05)
    assert calls == [sig] and stop.exit_code == code and stop.received == sig


def test_ctrl_c_while_loading_data_prints_a_resume_command_that_works(tiny_preset, isolated, monkeypatch):
    import workbench.train as train

    real = train.load_data

    def interrupted_load(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(train, "load_data", interrupted_load)
    result = _cli("run", tiny_preset, "--out", isolated / "runs", *FAST)
    assert result.exit_code == 130, result.output
    (run_dir,) = _folders(isolated / "runs")
    assert open_run(run_dir).status()["state"] == "interrupted"
    command = result.output.strip().splitlines()[-1].split("resume with: genwb ")[1].split()
    monkeypatch.setattr(train, "load_data", real)
    result = _cli(*command)
    assert result.exit_code == 0, result.output
    assert _steps(run_dir) == [2, 4]


def test_a_double_ctrl_c_leaves_interrupted_at_the_last_checkpoint(tiny_preset, isolated, monkeypatch):
    from models.made import MADE

    real_loss = MADE.loss
    calls = {"n": 0}

    def second_ctrl_c(self, x, y=None):
        calls["n"] += 1
        if calls["n"] == 8:  # the handler raises KeyboardInterrupt on a second Ctrl-C
            raise KeyboardInterrupt
        return real_loss(self, x, y)

    monkeypatch.setattr(MADE, "loss", second_ctrl_c)
    result = _cli("run", tiny_preset, "--out", isolated / "runs", "--set", "sample.every=0")
    assert result.exit_code == 130 and "resume from step 6 with: genwb run --resume" in result.output, result.output
    (run_dir,) = _folders(isolated / "runs")
    status = open_run(run_dir).status()
    assert status["state"] == "interrupted" and status["step"] == 6


def _start(tiny_preset, isolated, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "workbench.cli", "run", str(tiny_preset), "--out", str(isolated / "runs"),
                             "--set", "train.max_steps=100000", "--set", "train.val_every=0", "--set", "sample.every=0", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(isolated, proc, rows=1):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((isolated / "runs").glob("*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= rows:
            return found[0].parent
        time.sleep(0.05)
    raise AssertionError(f"no metrics appeared (exit {proc.poll()})")


@pytest.mark.slow
def test_sigterm_mid_run_checkpoints_then_resumes_with_metrics_exactly_once(tiny_preset, isolated):
    proc = _start(tiny_preset, isolated, "--set", "train.checkpoint_every=4")
    run_dir = _wait_for_rows(isolated, proc, rows=3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM: finishing this step" in err and "resume with: genwb run --resume" in err and "Traceback" not in err
    status = open_run(run_dir).status()
    step = open_run(run_dir).load_checkpoint("last")["step"]
    assert status["state"] == "interrupted" and status["step"] == step >= 6
    total = step + 4
    result = _cli("run", "--resume", run_dir, "--set", f"train.max_steps={total}", "--set", "eval.test=false")
    assert result.exit_code == 0, result.output
    assert _steps(run_dir) == sorted(set(range(2, total + 1, 2)) | {total})  # the last step is always logged


@pytest.mark.slow
def test_kill_9_before_the_first_checkpoint_then_resume(tiny_preset, isolated):
    proc = _start(tiny_preset, isolated, "--set", "train.checkpoint_every=0")
    run_dir = _wait_for_rows(isolated, proc, rows=1)
    proc.kill()
    proc.communicate(timeout=60)
    assert open_run(run_dir).status()["state"] == "running" and not (run_dir / "checkpoints" / "last.pt").exists()
    result = _cli("run", "--resume", run_dir, "--set", "train.max_steps=4", "--set", "eval.test=false")
    assert result.exit_code == 0, result.output
    assert "resuming" not in result.output and _steps(run_dir) == [2, 4]
    assert open_run(run_dir).status()["state"] == "finished"
