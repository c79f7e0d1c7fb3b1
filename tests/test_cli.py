"""The headless command line, end to end: lazy imports, a real run on Fashion-MNIST, sampling
from a run, and Ctrl-C that checkpoints and exits 130."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from workbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def _python(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_help_imports_neither_torch_nor_textual():
    out = _python("import sys\nfrom workbench.cli import main\n"
                  "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
                  "print('LOADED', [m for m in ('torch', 'textual') if m in sys.modules])")
    assert "LOADED []" in out.stdout, out.stdout + out.stderr


def test_only_the_tui_package_imports_textual():
    """Bug caught: a Textual or textual-serve import outside workbench/tui/ (as `genwb serve` once
    had in cli.py), which breaks the rule that only the app's package depends on Textual."""
    import re

    pattern = re.compile(r"^\s*(from|import)\s+textual(_serve|_image|_plot)?\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for folder in ("workbench", "models") for p in (ROOT / folder).rglob("*.py")
                 if "tui" not in p.relative_to(ROOT).parts and pattern.search(p.read_text())]
    assert offenders == []


@pytest.mark.slow
def test_headless_run_never_imports_textual(tiny_preset, isolated):
    env = {**os.environ}
    out = _python("import sys\nfrom workbench.cli import main\n"
                  f"try:\n    main(['run', {str(tiny_preset)!r}, '--out', {str(isolated / 'runs')!r}, '--set', 'train.max_steps=2'])\n"
                  "except SystemExit as e:\n    print('EXIT', e.code)\n"
                  "print('LOADED', [m for m in ('textual', 'tensorboardX', 'wandb') if m in sys.modules])", env=env)
    assert "EXIT 0" in out.stdout and "LOADED []" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow
def test_diff_and_export_load_only_what_they_were_asked_for(tiny_preset, isolated):
    """genwb diff reads files (no torch, no extra); export tensorboard loads tensorboardX (whose
    package imports torch itself) and not wandb."""
    from workbench.config import load_config, to_toml

    runs = []
    for name, lr in (("a-20260101-000000", 0.001), ("b-20260101-000000", 0.002)):
        run = isolated / "runs" / name
        (run / "samples").mkdir(parents=True)
        (run / "config.toml").write_text(to_toml(load_config(tiny_preset, [f"train.lr={lr}"])))
        (run / "metrics.jsonl").write_text('{"step": 2, "split": "train", "loss": 1.5}\n')
        runs.append(str(run))
    for argv, allowed in ((["diff", *runs], ()), (["export", "tensorboard", runs[0]], ("torch", "tensorboardX"))):
        out = _python("import sys\nfrom workbench.cli import main\n"
                      f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    print('EXIT', e.code)\n"
                      "print('LOADED', [m for m in ('torch', 'textual', 'tensorboardX', 'wandb') if m in sys.modules])")
        if argv[0] == "export" and "EXIT 2" in out.stdout and "not installed" in out.stderr:
            continue  # no tensorboardX here: refused, as its own test checks
        assert "EXIT 0" in out.stdout and f"LOADED {list(allowed)}" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir() and not os.environ.get("CI"), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_run_then_sample_on_fashion_mnist(isolated, monkeypatch):
    monkeypatch.setenv("GENWB_OFFLINE", "1")
    runs = isolated / "runs"
    result = CliRunner().invoke(main, ["run", str(ROOT / "presets" / "made.toml"), "--out", str(runs), "--device", "cpu",
                                       "--set", "train.max_steps=30", "--set", "train.val_every=15", "--set", "sample.every=30",
                                       "--set", "data.val_size=1000", "--set", "train.log_every=10"])
    assert result.exit_code == 0, result.output
    assert "step 30/30" in result.output and "bits/dim" in result.output
    (run_dir,) = runs.iterdir()
    results = json.loads((run_dir / "eval.json").read_text())
    assert results["test_images"] == 10000 and 0 < results["test_bpd"] < 1
    out = isolated / "grid.png"
    result = CliRunner().invoke(main, ["sample", str(run_dir), "-n", "9", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert Image.open(out).size == (3 * 29 + 1, 3 * 29 + 1)


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_prints_the_resume_command(tiny_preset, isolated):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "run", str(tiny_preset), "--out", str(isolated / "runs"),
                             "--set", "train.max_steps=100000", "--set", "train.val_every=0", "--set", "train.checkpoint_every=0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("step "):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume with: genwb run --resume" in err and "Traceback" not in err
    (run_dir,) = (isolated / "runs").iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and status["step"] > 0
    assert (run_dir / "checkpoints" / "last.pt").exists()
