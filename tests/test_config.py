"""Presets: every shipped preset validates, overrides are typed by the schema, and each kind of
bad input is one line naming the file and key, with exit code 2 and no traceback."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from workbench.cli import main
from workbench.config import load_config, parse_config, to_toml
from workbench.errors import UserError

PRESETS = sorted(Path(__file__).resolve().parents[1].glob("presets/*.toml"))
GOOD = """
[run]
name = "x"
[data]
binarize = "dynamic"
levels = 2
[model]
name = "made"
hidden = [10]
[train]
max_steps = 5
"""


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_shipped_preset_is_valid_and_round_trips(preset):
    cfg = load_config(preset)
    assert cfg.model.name
    assert parse_config(to_toml(cfg)) == cfg


def test_overrides_are_parsed_by_the_schema_types():
    cfg = parse_config(GOOD, "p.toml", ["train.lr=0.01", "train.max_steps=7", "model.hidden=[4, 5]", "run.name=abc",
                                        "data.download=false", "run.device=cpu"])
    assert cfg.train.lr == 0.01 and cfg.train.max_steps == 7 and cfg.model.hparams["hidden"] == [4, 5]
    assert cfg.run.name == "abc" and cfg.data.download is False


BAD = [
    ("[run\nname = 1", r"p\.toml:1:\d+: invalid TOML"),
    (GOOD + "\n[trian]\n", r"unknown table \[trian\] \(did you mean 'train'\?\)"),
    (GOOD.replace("max_steps = 5", "max_steps = 5\nlrr = 0.1"), r"\[train\]: unknown key 'lrr' \(did you mean 'lr'\?\); allowed: optimizer"),
    (GOOD.replace("max_steps = 5", "max_steps = 5\nlr = \"fast\""), r"\[train\]: lr must be a number, got \"fast\""),
    (GOOD.replace("max_steps = 5", "max_steps = -1"), r"max_steps = -1 is below its minimum 0"),
    (GOOD.replace("binarize = \"dynamic\"", "binarize = \"dynamc\""), r"not allowed \(did you mean 'dynamic'\?\); allowed: none, threshold, dynamic"),
    (GOOD.replace("name = \"made\"", "name = \"mdae\""), r"unknown model 'mdae' \(did you mean 'made'\?\)"),
    (GOOD.replace("hidden = [10]", "hiden = [10]"), r"unknown key 'hiden' \(did you mean 'hidden'\?\) for model 'made'"),
    (GOOD.replace("hidden = [10]", "num_masks = \"two\""), r"num_masks must be an integer"),
    (GOOD.replace("levels = 2", "levels = 256"), r"binarize = 'dynamic' gives 2 levels"),
    (GOOD.replace("max_steps = 5", "epochs = 0"), r"set exactly one of max_steps and epochs"),
]


@pytest.mark.parametrize("text,pattern", BAD)
def test_bad_presets_say_what_is_wrong(text, pattern):
    with pytest.raises(UserError, match=pattern) as info:
        parse_config(text, "p.toml")
    assert "\n" not in str(info.value) and info.value.exit_code == 2


def _cli(args, **kw):
    return CliRunner().invoke(main, args, **kw)


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("lr", "x") + "\nwarmup = 3\n")
    cases = [
        (["run", str(tmp_path / "missing.toml")], "no such preset file"),
        (["run", str(bad)], "bad.toml: [train]: unknown key 'warmup' (did you mean 'warmup_steps'?)"),
        (["run", str(bad), "--set", "train.max_steps"], "expected section.key=value"),
        (["sample", str(tmp_path)], "not a run folder"),
    ]
    for args, message in cases:
        result = _cli(args)
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_a_device_this_machine_lacks_is_refused(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    result = _cli(["run", str(good), "--device", "cuda", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "no usable CUDA GPU; use --device cpu" in result.output
    result = _cli(["run", str(good), "--device", "tpu", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "unknown device 'tpu'; allowed: auto, cpu, cuda, cuda:N" in result.output
