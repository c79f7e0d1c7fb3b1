"""presets/paper/: every preset loads, names only hyper-parameters its model takes, cites the
figure to expect and says whether it was checked, and builds (on the meta device, so no memory
is spent; MADE, whose masks are computed while it is built, at a hundredth of its width)."""
from pathlib import Path

import pytest
import torch

import models
from workbench.config import load_config
from workbench.runs import build_model

PAPER = sorted((Path(__file__).resolve().parents[1] / "presets" / "paper").glob("*.toml"))


def test_one_preset_per_model_and_dataset():
    names = {p.stem for p in PAPER}
    assert {"made_mnist", "nade_mnist", "pixelcnn_mnist", "row_lstm_mnist", "diagonal_bilstm_mnist", "vae_mnist",
            "pixelcnn_cifar10", "pixelcnn_gated_cifar10", "row_lstm_cifar10", "diagonal_bilstm_cifar10",
            "vqvae_cifar10", "vqvae_prior_cifar10"} <= names


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_preset_loads_and_names_known_hyper_parameters(path):
    config = load_config(path)
    assert config.run.device == "auto"
    hparams = {k[:-4] if k.endswith("_run") else k for k in config.model.hparams}  # x_run passes x
    assert hparams <= set(models.hyperparameters(config.model.name))
    text = path.read_text()
    assert "CHECKED" in text, "say whether the paper's figure was checked"
    assert "bf16" in text


@pytest.mark.parametrize("path", [p for p in PAPER if "prior" not in p.stem], ids=lambda p: p.stem)
def test_preset_builds(path):
    config = load_config(path)
    if config.model.name == "made":
        config.model.hparams["hidden"] = [h // 100 for h in config.model.hparams["hidden"]]
        model = build_model(config)
    else:
        with torch.device("meta"):
            model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) > 0
