"""Property-based fuzzing of ``genwb run``: a valid tiny preset, mutated in its values' types,
ranges and nesting, in unknown tables and keys, in its encoding, or through ``--set``, either
trains (a one-step run that finishes) or is refused with exit code 2, one line, and no run
folder left behind. A run whose mutated settings diverge may fail with exit code 1, one line,
after it logged a step. Never a traceback."""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from pathlib import Path

import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from workbench.cli import main

# GENWB_FUZZ_EXAMPLES=2000 fuzzes for longer; the suite keeps to a few seconds.
EXAMPLES = int(os.environ.get("GENWB_FUZZ_EXAMPLES", "40"))
BASE = {
    "run": {"name": "fuzz", "seed": 3, "device": "cpu"},
    "data": {"dataset": "fashion-mnist", "binarize": "dynamic", "levels": 2, "val_size": 40, "batch_size": 20},
    "model": {"name": "made", "hidden": [16], "num_masks": 1},
    "train": {"lr": 3e-3, "max_steps": 1, "log_every": 1, "val_every": 0, "checkpoint_every": 0},
    "sample": {"n": 2, "every": 0},
    "eval": {"batch_size": 50, "test": False},
}
KEYS = {
    "run": ["name", "seed", "device", "threads", "out"],
    "data": ["dataset", "root", "download", "binarize", "levels", "val_size", "batch_size"],
    "model": ["name", "conditional", "hidden", "num_masks", "order", "order_agnostic", "seed", "vqvae_run"],
    "train": ["optimizer", "lr", "weight_decay", "beta1", "beta2", "schedule", "warmup_steps", "grad_clip",
              "max_steps", "epochs", "log_every", "val_every", "val_batches", "checkpoint_every", "early_stopping", "bf16"],
    "sample": ["n", "every"],
    "eval": ["test", "batch_size"],
}
# Small numbers only: a mutation must not turn the one-step run into a long one.
scalars = st.one_of(
    st.integers(-3, 12),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 0.5, 0.999, 1.0, 10.7, -1e-3, 1e-300]),
    st.booleans(),
    st.sampled_from(["", "made", "mdae", "natural", "random", "cpu", "cuda:7", "../x", "dynamic", "fashion-mnist", "é\n\t\"'"]),
    st.text(max_size=6),
    st.just(dt.date(1979, 5, 27)),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abn"), inner, max_size=2),
                      max_leaves=4)
sections = st.sampled_from(sorted(KEYS) + ["trian", "extra"])


@st.composite
def mutations(draw):
    section = draw(sections)
    kind = draw(st.sampled_from(["set", "set", "set", "delete", "section"]))
    known = KEYS.get(section, ["x"])
    key = draw(st.sampled_from(known) | st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6))
    return kind, section, key, draw(values)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, dt.date)):
        return str(value) if not isinstance(value, dt.date) else value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_text(raw: dict) -> str:
    lines = [f"{name} = {toml_value(table)}" for name, table in raw.items() if not isinstance(table, dict)]
    for name, table in raw.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines += [f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def encode(text: str, encoding: str) -> bytes:
    if encoding == "latin-1 comment":
        return (text + "# café\n").encode("latin-1", errors="replace")
    if encoding == "garbage":
        return text.encode() + b"\xff\xfe\x00\x9c"
    return text.encode(encoding)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.lists(mutations(), min_size=1, max_size=3),
       as_overrides=st.booleans(),
       encoding=st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1 comment", "garbage"]))
def test_a_mutated_preset_trains_or_is_refused_in_one_line(tiny_data, changes, as_overrides, encoding):
    raw = json.loads(json.dumps(BASE))
    overrides = []
    for kind, section, key, value in changes:
        if kind == "set" and as_overrides:
            overrides += ["--set", f"{section}.{key}={toml_value(value)}"]
        elif kind == "set":
            raw.setdefault(section, {})
            if isinstance(raw[section], dict):
                raw[section][key] = value
        elif kind == "delete" and isinstance(raw.get(section), dict):
            raw[section].pop(key, None)
        elif kind == "section":
            raw[section] = value
    work = Path(tempfile.mkdtemp(dir=tiny_data.parent))
    preset = work / "preset.toml"
    preset.write_bytes(encode(toml_text(raw), encoding))
    out = work / "runs"
    try:
        result = CliRunner().invoke(main, ["run", str(preset), "--out", str(out), *overrides])
    finally:
        torch.set_num_threads(1)  # a mutated [run] threads must not slow the tests after this one
    event(f"exit code {result.exit_code}")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    folders = sorted(out.iterdir()) if out.exists() else []
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    if result.exit_code == 0:
        assert len(folders) == 1 and json.loads((folders[0] / "status.json").read_text())["state"] == "finished"
        assert (folders[0] / "checkpoints" / "last.pt").exists()
    elif result.exit_code == 2:
        assert result.output.count("\n") == 1 and len(errors) == 1, result.output
        assert folders == [], f"a refused preset left {folders}"
    else:
        assert result.exit_code == 1, result.output
        assert len(errors) == 1 and result.output.rstrip("\n").splitlines()[-1] == errors[0], result.output
        assert len(folders) == 1 and (folders[0] / "metrics.jsonl").read_text().strip(), "failed before training a step"
