"""Presets: TOML tables [run] [data] [model] [train] [sample] [eval] [log], validated into dataclasses.

Every error is a ``UserError`` whose one line names the file, the key and what is allowed:
malformed TOML (file:line:col), unknown tables and keys (with the nearest match), wrong
types, values out of range, unknown models and their unknown hyper-parameters.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import UserError, one_line


def _choice(*values):
    return {"choices": values}


@dataclass
class RunSection:
    name: str = "run"
    seed: int = field(default=0, metadata={"min": 0})
    device: str = "auto"
    threads: int = field(default=0, metadata={"min": 0, "max": 4096})  # CPU threads for torch; 0 = torch's default
    gpus: int = field(default=1, metadata={"min": 1, "max": 4096})  # processes (GPUs) to train on: > 1 is DDP through torchrun
    out: str = "runs"


@dataclass
class DataConfig:
    dataset: str = field(default="fashion-mnist", metadata=_choice("fashion-mnist", "mnist", "kmnist", "cifar10"))
    root: str = ""
    download: bool = True
    binarize: str = field(default="none", metadata=_choice("none", "threshold", "dynamic"))
    levels: int = field(default=256, metadata={"min": 2, "max": 256})
    val_size: int = field(default=5000, metadata={"min": 1})
    batch_size: int = field(default=64, metadata={"min": 1})


@dataclass
class ModelConfig:
    name: str = ""
    conditional: bool = False
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    optimizer: str = field(default="adam", metadata=_choice("adam", "adamw"))
    lr: float = field(default=1e-3, metadata={"min_exclusive": 0.0})
    weight_decay: float = field(default=0.0, metadata={"min": 0.0})
    beta1: float = field(default=0.9, metadata={"min": 0.0, "max_exclusive": 1.0})  # Adam needs 0 <= beta < 1
    beta2: float = field(default=0.999, metadata={"min": 0.0, "max_exclusive": 1.0})
    schedule: str = field(default="constant", metadata=_choice("constant", "cosine"))
    warmup_steps: int = field(default=0, metadata={"min": 0})
    grad_clip: float = field(default=0.0, metadata={"min": 0.0})
    max_steps: int = field(default=0, metadata={"min": 0})
    epochs: int = field(default=0, metadata={"min": 0})
    log_every: int = field(default=10, metadata={"min": 1})
    val_every: int = field(default=500, metadata={"min": 0})
    val_batches: int = field(default=0, metadata={"min": 0})
    checkpoint_every: int = field(default=500, metadata={"min": 0})
    early_stopping: int = field(default=0, metadata={"min": 0})
    # bf16 autocast on CUDA: true, false, or "auto" (only models big enough to gain, see
    # workbench.accel.use_bf16); on a CPU training is always fp32.
    bf16: bool | str = field(default="auto", metadata=_choice("auto", True, False))
    compile: str = field(default="off", metadata=_choice("off", "default", "reduce-overhead"))  # torch.compile of the loss
    # the forward and backward replayed from one CUDA graph (workbench.accel.GraphStep): CUDA only;
    # "auto" where the model's loss can be captured, and never with compile or under DDP
    cuda_graph: bool | str = field(default="auto", metadata=_choice("auto", True, False))


@dataclass
class SampleConfig:
    n: int = field(default=64, metadata={"min": 1, "max": 10000})  # one grid image per sampling step
    every: int = field(default=500, metadata={"min": 0})


@dataclass
class EvalConfig:
    test: bool = True
    batch_size: int = field(default=500, metadata={"min": 1})


@dataclass
class LogConfig:
    tensorboard: bool = False  # TensorBoard event files in the run folder (workbench.tensorboard; the tensorboard extra)


@dataclass
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for f in dataclasses.fields(self):
            section = dataclasses.asdict(getattr(self, f.name))
            if f.name == "model":
                section.update(section.pop("hparams"))
            out[f.name] = section
        return out


SECTION_TYPES = {"run": RunSection, "data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                  "sample": SampleConfig, "eval": EvalConfig, "log": LogConfig}


def _nearest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(kind) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


def _show(value) -> str:
    """A value as the user wrote it, on one line (TOML dates and tables included)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return one_line(value)


def _check_value(where: str, key: str, value, kind, meta: dict) -> Any:
    """Check ``value`` against a field's type and metadata; return it normalised."""
    choices = meta.get("choices", ())
    if any(not isinstance(c, str) for c in choices):  # mixed choices, e.g. "auto" | true | false
        if not any(type(value) is type(c) and value == c for c in choices):
            raise UserError(f"{where}: {key} = {_show(value)} is not allowed; allowed: {', '.join(_show(c) for c in choices)}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind in (bool, int, float, str) and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise UserError(f"{where}: {key} must be {_type_name(kind)}, got {_show(value)}")
    if kind is float and not math.isfinite(value):
        raise UserError(f"{where}: {key} must be a finite number, got {value}")
    if "choices" in meta and value not in meta["choices"]:
        raise UserError(f"{where}: {key} = {_show(value)} is not allowed{_nearest(str(value), meta['choices'])}; allowed: {', '.join(meta['choices'])}")
    if "min" in meta and value < meta["min"]:
        raise UserError(f"{where}: {key} = {value} is below its minimum {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise UserError(f"{where}: {key} = {value} is above its maximum {meta['max']}")
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        raise UserError(f"{where}: {key} = {value} must be greater than {meta['min_exclusive']}")
    if "max_exclusive" in meta and value >= meta["max_exclusive"]:
        raise UserError(f"{where}: {key} = {value} must be below {meta['max_exclusive']}")
    return value


def _hparam_value(where: str, key: str, value, default):
    """Model hyper-parameters are typed by their default in the model's signature; a list's
    items by the type of the default's items (so 10.7 is not silently truncated to 10)."""
    if default is None:
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, list):
            raise UserError(f"{where}: {key} must be a list like {list(default)}, got {_show(value)}")
        kinds = {type(v) for v in default}
        if len(kinds) == 1:
            kind = kinds.pop()
            return [_check_value(where, f"{key}[{i}]", v, kind, {}) for i, v in enumerate(value)]
        return value
    return _check_value(where, key, value, type(default), {})


def _build(source: str, raw: dict[str, Any], check_model: bool = True) -> RunConfig:

    unknown = [t for t in raw if t not in SECTION_TYPES]
    if unknown:
        raise UserError(f"{source}: unknown table [{unknown[0]}]{_nearest(unknown[0], SECTION_TYPES)}; allowed: {', '.join(f'[{t}]' for t in SECTION_TYPES)}")
    sections = {}
    for name, cls in SECTION_TYPES.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise UserError(f"{source}: [{name}] must be a table")
        where = f"{source}: [{name}]"
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "hparams"}
        types = typing.get_type_hints(cls)
        values, extra = {}, {}
        for key, value in table.items():
            if key in fields:
                f = fields[key]
                values[key] = _check_value(where, key, value, types[key], dict(f.metadata))
            elif name == "model":
                extra[key] = value
            else:
                raise UserError(f"{where}: unknown key {key!r}{_nearest(key, fields)}; allowed: {', '.join(fields)}")
        if name == "model" and not check_model:  # a run's own config.toml, checked when the run was made
            values["hparams"] = extra
        elif name == "model":
            import models  # loads torch: the model classes' signatures are the hyper-parameters

            if not values.get("name"):
                raise UserError(f"{where}: name is missing; allowed: {', '.join(models.names())}")
            try:
                allowed = models.hyperparameters(values["name"])
            except ValueError as e:
                raise UserError(f"{where}: {e}") from None
            for key, value in extra.items():
                if key not in allowed and not (key.endswith("_run") and key[:-4] in allowed):
                    raise UserError(f"{where}: unknown key {key!r}{_nearest(key, list(allowed) + list(fields))} for model {values['name']!r}; allowed: {', '.join(list(fields) + sorted(allowed))}")
                if key in allowed:
                    extra[key] = _hparam_value(where, key, value, allowed[key])
                elif not isinstance(value, str) or not value.strip():
                    raise UserError(f"{where}: {key} must name a run folder (a string like \"runs/{key[:-4]}\"), got {_show(value)}")
            values["hparams"] = extra
        sections[name] = cls(**values)
    cfg = RunConfig(**sections)
    _check_consistency(source, cfg)
    return cfg


def _check_consistency(source: str, cfg: RunConfig) -> None:
    d, t = cfg.data, cfg.train
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.run.device):
        raise UserError(f"{source}: [run] device = {cfg.run.device!r} is not allowed; allowed: auto, cpu, cuda, cuda:N")
    if d.binarize != "none" and d.levels != 2:
        raise UserError(f"{source}: [data] binarize = {d.binarize!r} gives 2 levels, but levels = {d.levels}; set levels = 2 or binarize = \"none\"")
    if d.levels == 2 and d.binarize == "none":
        raise UserError(f"{source}: [data] levels = 2 needs binarize = \"threshold\" or \"dynamic\"")
    if (t.max_steps > 0) == (t.epochs > 0):
        raise UserError(f"{source}: [train] set exactly one of max_steps and epochs (got max_steps = {t.max_steps}, epochs = {t.epochs})")


_LOC = re.compile(r"\(at line (\d+), column (\d+)\)")


def load_config(path: str | Path, overrides: list[str] = (), check_model: bool = True) -> RunConfig:
    """Read a preset, apply ``section.key=value`` overrides, validate. ``check_model=False`` leaves
    the model's hyper-parameters as they are (a run's own config.toml: no torch import)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark from a Windows editor is fine
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save the preset as UTF-8") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a preset file; give a .toml file") from None
    except FileNotFoundError:
        presets = sorted(p.name for p in Path("presets").glob("*.toml")) if Path("presets").is_dir() else []
        hint = f"; presets here: {', '.join(presets)}" if presets else ""
        raise UserError(f"{path}: no such preset file{hint}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    return parse_config(text, str(path), overrides, check_model)


def parse_config(text: str, source: str = "<preset>", overrides: list[str] = (), check_model: bool = True) -> RunConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        loc = _LOC.search(msg)
        where = f"{source}:{loc.group(1)}:{loc.group(2)}" if loc else source
        raise UserError(f"{where}: invalid TOML: {_LOC.sub('', msg).strip()}") from None
    for item in overrides:
        apply_override(raw, item)
    return _build(source, raw, check_model)


def parse_value(text: str) -> Any:
    """A --set value: a TOML literal (number, bool, list, quoted string), else a bare string."""
    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return parsed["v"] if list(parsed) == ["v"] else text  # "1\nx = 2" is text, not the number 1


def apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise UserError(f"--set {item!r}: expected section.key=value, e.g. train.max_steps=100")
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise UserError(f"--set {item!r}: [{section}] is not a table")
    parsed = parse_value(value.strip())
    # A string field keeps the text as written (so "1e-3" stays usable for str keys too).
    cls = SECTION_TYPES.get(section)
    types = typing.get_type_hints(cls) if cls else {}
    raw[section][name] = value.strip() if types.get(name) is str and not isinstance(parsed, str) else parsed


def toml_value(value: Any) -> str:
    """A value as TOML writes it (and as ``--set`` reads it): strings quoted, lists in brackets."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(cfg: RunConfig) -> str:
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)
