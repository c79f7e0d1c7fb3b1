"""``genwb export wandb``: an offline W&B run per run folder, read back with W&B's own offline
reader (``wandb leet inspect --json``, which reads the run's .wandb transaction log)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tests.conftest import preset_text, train_tiny
from workbench.cli import main

VAE = 'name = "vae"\narch = "mlp"\nhidden = 32\nlatent_dim = 4\niw_samples = 2'


def wandb_records(run_folder) -> list[dict]:
    (log,) = run_folder.glob("run-*.wandb")
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "WANDB_MODE": "offline"})
    if out.returncode != 0 and "No such command" in out.stderr:
        pytest.skip(f"this wandb has no offline reader (wandb leet inspect): {out.stderr.strip()[:200]}")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_export_writes_an_offline_run_with_every_scalar_images_config_and_summary(tiny_data, isolated, monkeypatch):
    """Kills: a scalar left out or at another step, images missing, the summary not from
    eval.json, and a run that goes online because the environment said so."""
    pytest.importorskip("wandb", reason="the wandb package is not installed (pip install 'genwb[wandb]')")
    preset = isolated / "vae.toml"
    preset.write_text(preset_text(VAE, "vae"))
    run_dir = train_tiny(preset, isolated / "runs")
    monkeypatch.setenv("WANDB_MODE", "online")  # forced offline all the same (and there is no network here)
    out = isolated / "wb"
    result = CliRunner().invoke(main, ["export", "wandb", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (folder,) = (out / "wandb").glob("offline-run-*")
    assert str(folder) in result.output
    records = wandb_records(folder)

    history = {r["history"]["step"]["num"]: r["history"]["item"] for r in records if r["type"] == "history"}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        for key, value in row.items():
            if key not in ("step", "split"):
                assert history[row["step"]][f"{row['split']}/{key}"] == pytest.approx(value, rel=1e-12), (row["step"], key)
    logged = {(step, k) for step, item in history.items() for k in item if "/" in k}
    assert logged == {(row["step"], f"{row['split']}/{k}") for row in rows for k in row if k not in ("step", "split")}
    for tag, prefix in (("samples", "step-"), ("recon", "recon-step-")):
        steps = sorted(int(p.name[len(prefix):-4]) for p in (run_dir / "samples").glob(f"{prefix}*.png"))
        assert steps and sorted(s for s, item in history.items() if item.get(f"{tag}._type") == "image-file") == steps

    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["display_name"] == run_dir.name and run["project"] == "genwb"
    config = run["config"]["update"]
    assert config["model"]["hidden"] == 32 and config["train"]["lr"] == pytest.approx(3e-3)
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"]["update"])
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert summary["test/nll"] == pytest.approx(evaluation["test_nll"]) and summary["state"] == "finished"
    assert summary["val/best_nll"] == pytest.approx(min(r["nll"] for r in rows if r["split"] == "val"))
    assert any(r["type"] == "exit" for r in records)

    result = CliRunner().invoke(main, ["export", "wandb", str(run_dir)])  # by default into the run folder
    assert result.exit_code == 0, result.output
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1


def test_without_wandb_the_export_says_how_to_install_it(tiny_preset, isolated, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    run_dir = train_tiny(tiny_preset, isolated / "runs", ["train.max_steps=2", "eval.test=false"])
    result = CliRunner().invoke(main, ["export", "wandb", str(run_dir)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: genwb export wandb needs the wandb package, which is not installed: pip install 'genwb[wandb]'"]
    assert not (run_dir / "wandb").exists()
