"""Fixtures shared by the tests: a tiny Fashion-MNIST written as IDX files, an isolated cache,
and a small preset that trains in about a second; helpers to vary the preset, train it once
for a whole module, and wait on a queue."""
from __future__ import annotations

import contextlib
import ctypes
import gzip
import os
import signal
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

# Tiny tensors: one thread is faster than two, and steadier on a busy machine.
torch.set_num_threads(1)
# Read once, before any test hides the devices: the `cuda` tests' skip conditions see the real answer.
CUDA_PRESENT = torch.cuda.is_available()
_PR_SET_CHILD_SUBREAPER = 36


def pytest_configure(config):
    # Orphans of the processes a test starts (torchrun's workers live in sessions of their own and
    # outlive a killed launcher) become pytest's children instead of init's, so teardown finds them.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def pytest_collection_modifyitems(config, items):
    # The app's tests drive it end to end (Pilot sessions over trained runs, real terminals): with
    # the other end-to-end tests they are `slow`, so that `-m "not slow"` is a quick loop over the
    # library's own tests. The README's test command runs them all.
    for item in items:
        if item.path.name.startswith("test_tui_"):
            item.add_marker(pytest.mark.slow)


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid``, whatever its session or process group (through /proc)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*") if Path(f"/proc/{parent}/task").exists() else ():
            with contextlib.suppress(OSError, ValueError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found


@pytest.fixture(autouse=True)
def _cpu_unless_cuda_and_no_stray_processes(request, monkeypatch):
    """A test without the ``cuda`` mark sees no CUDA device, in-process (``device = "auto"``
    resolves to the CPU) and in the processes it starts; every process it started is killed at its
    teardown, so a test that fails half-way cannot leave a trainer holding pytest's pipes."""
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = set(descendants(os.getpid()))
    yield
    stray = [p for p in descendants(os.getpid()) if p not in before]
    for pid in stray:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in stray:  # reap the orphans pytest adopted as subreaper; Popen reaps its own
        with contextlib.suppress(OSError):
            os.waitpid(pid, os.WNOHANG)


def write_idx(path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def make_idx_dataset(folder, n_train=240, n_test=60, seed=0, size=28) -> None:
    """Images with a class-dependent bright square, so models and classifiers can learn a little."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, size, size))
        for i, y in enumerate(labels):
            r, c = divmod(int(y), 5)
            images[i, 4 + 10 * r : 12 + 10 * r, 2 + 5 * c : 6 + 5 * c] = 230
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


@pytest.fixture(autouse=True)
def user_config_home(tmp_path_factory, monkeypatch):
    """Every test reads and writes the user config file (views' sort and filter) in a fresh
    temporary $XDG_CONFIG_HOME, never the real ~/.config/genwb, and starts a fresh app session."""
    import sys

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    settings = sys.modules.get("workbench.tui.settings")
    if settings is not None and hasattr(settings, "forget_session_views"):
        settings.forget_session_views()


@pytest.fixture
def halfcell():
    """Images drawn as half-block cells whatever the terminal; the automatic choice after."""
    from workbench.tui import settings  # only the app's tests import Textual
    settings.use_image_protocol("halfcell")
    yield
    settings.use_image_protocol("auto")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No network, no user cache: every file the test touches lives under tmp_path."""
    monkeypatch.setenv("GENWB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENWB_OFFLINE", "1")
    monkeypatch.delenv("GENWB_DATA", raising=False)
    return tmp_path


@pytest.fixture
def tiny_data(isolated, monkeypatch):
    root = isolated / "data"
    make_idx_dataset(root / "fashion-mnist")
    monkeypatch.setenv("GENWB_DATA", str(root))
    return root


_TINY_TEMPLATE = """
[run]
name = "tiny"
seed = 3
device = "cpu"

[data]
dataset = "fashion-mnist"
binarize = "dynamic"
levels = 2
val_size = 40
batch_size = 20

[model]
{model}

[train]
lr = 3e-3
max_steps = 24
log_every = 2
val_every = 6
checkpoint_every = 6

[sample]
n = 4
every = 12

[eval]
batch_size = 50
"""
TINY_MODEL = 'name = "made"\nhidden = [32]\nnum_masks = 2'
TINY_PRESET = _TINY_TEMPLATE.replace("{model}", TINY_MODEL)


def preset_text(model: str = TINY_MODEL, name: str = "tiny") -> str:
    """TINY_PRESET with another [model] section (its TOML lines) and run name."""
    return _TINY_TEMPLATE.replace("{model}", model).replace('name = "tiny"', f'name = "{name}"')


@pytest.fixture
def tiny_preset(tiny_data, isolated):
    path = isolated / "tiny.toml"
    path.write_text(TINY_PRESET)
    return path


@contextlib.contextmanager
def offline_workspace(root: Path):
    """What ``isolated`` and ``tiny_data`` give a test, for a module-scoped fixture: a cache, no
    network and the tiny Fashion-MNIST, all under ``root``, inside the with block."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENWB_CACHE", str(root / "cache"))
        mp.setenv("GENWB_OFFLINE", "1")
        mp.setenv("GENWB_DATA", str(root / "data"))
        make_idx_dataset(root / "data" / "fashion-mnist")
        yield root


def train_tiny(preset: Path, out: Path, overrides=(), on_event=None) -> Path:
    """Train ``preset`` to its end in a new run folder under ``out``; that folder."""
    from workbench.config import load_config
    from workbench.runs import Run
    from workbench.train import Trainer

    config = load_config(preset, list(overrides))
    run = Run.create(config, out)
    trainer = Trainer(config, run)
    if on_event is not None:
        trainer.subscribe(on_event)
    trainer.fit()
    return run.path


def train_losses(preset: Path, out: Path, overrides=()):
    """Train ``preset`` to completion in a new run folder: (run, trainer, the logged training
    losses, the Warned messages)."""
    from workbench import events as ev
    from workbench.config import load_config
    from workbench.runs import Run
    from workbench.train import Trainer

    run = Run.create(load_config(preset, list(overrides)), out)
    trainer = Trainer(run.config, run)
    seen = []
    trainer.subscribe(seen.append)
    assert trainer.fit().reason == "completed"
    losses = [e.metrics["loss"] for e in seen if isinstance(e, ev.Step)]
    return run, trainer, losses, [e.message for e in seen if isinstance(e, ev.Warned)]


def wait(predicate, what: str, timeout: float = 90, every: float = 0.03) -> None:
    """Poll until ``predicate()`` holds (a queue works in threads or another process); fail
    naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


_START_S: list[float] = []


def python_start_s() -> float:
    """Seconds a trivial genwb process takes to start here (Python, torch, workbench.cli), measured
    once per session: deadlines on other processes are multiples of it, longer on a loaded machine."""
    if not _START_S:
        import subprocess
        import sys

        began = time.monotonic()
        subprocess.run([sys.executable, "-c", "import torch, workbench.cli"], check=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        _START_S.append(max(time.monotonic() - began, 0.5))
    return _START_S[0]


def train_steps(run_dir) -> list[int]:
    """The steps of a run's training rows in metrics.jsonl."""
    from workbench.runs import open_run

    return [r["step"] for r in open_run(run_dir).read_metrics() if r["split"] == "train"]
