"""Data-parallel training on a CPU (gloo, 2 processes through ``genwb run --nproc 2``): the
weights equal a single process's over the same global batch, a run stopped by SIGTERM on one
rank stops every rank at the same step and resumes with every metric logged once, and a rank
killed with SIGKILL fails the run within the timeout instead of leaving the others waiting."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench import distributed
from workbench.config import load_config
from workbench.runs import Run, open_run
from workbench.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
# No randomness in the loss or the data (one mask, a fixed threshold), so that one process and
# two agree to float rounding; no sampling or test pass, to stay fast.
EXACT = ["--set", "data.binarize=threshold", "--set", "model.num_masks=1", "--set", "sample.every=0",
         "--set", "eval.test=false", "--set", "train.val_every=12"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _measure_start() -> float:
    """Seconds a trivial rank takes to start here (Python, torch, the launcher's and the trainer's
    imports): every deadline below is a multiple of it, so a loaded machine gets longer ones."""
    began = time.monotonic()
    subprocess.run([sys.executable, "-c", "import torch.distributed.run, workbench.cli, workbench.train"],
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, timeout=600)
    return max(time.monotonic() - began, 0.5)


START_S = None  # measured once, by the first test that asks


def start_s() -> float:
    global START_S
    if START_S is None:
        START_S = _measure_start()
    return START_S


def deadline(base: float, starts: float) -> float:
    """``base`` seconds (enough on a quiet machine) plus ``starts`` rank starts as measured now."""
    return base + starts * start_s()


def _env() -> dict[str, str]:
    # CPU and gloo even where CUDA is visible: the ranks must not each initialise a GPU.
    return {**os.environ, "PYTHONPATH": str(ROOT), "GENWB_DDP_TIMEOUT": str(round(deadline(10, 8))),
            "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "GENWB_TEST_MARK": _MARK}


_MARK = f"test-ddp-{os.getpid()}"


def _marked_processes() -> list[int]:
    """Processes this test module started (they carry its mark in their environment)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"GENWB_TEST_MARK={_MARK}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _genwb(*args, cwd, timeout_s: float | None = None) -> subprocess.Popen:
    env = _env() if timeout_s is None else {**_env(), "GENWB_DDP_TIMEOUT": str(timeout_s)}
    return subprocess.Popen([sys.executable, "-m", "workbench.cli", "run", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float | None = None) -> tuple[int, str]:
    timeout = deadline(30, 40) if timeout is None else timeout
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"genwb run did not finish within {timeout:.0f} s (rank start {start_s():.1f} s):\n{out[-3000:]}")
    return proc.returncode, out


def _only_run(folder: Path) -> Path:
    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def _single_process(preset, out, overrides) -> Run:
    config = load_config(preset, [o for o in overrides if o != "--set"])
    run = Run.create(config, out)
    Trainer(config, run).fit()
    return run


def _assert_same_weights(a: Run, b: Run) -> None:
    wa, wb = a.load_checkpoint("last")["model"], b.load_checkpoint("last")["model"]
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name].float(), wa[name].float(), atol=1e-5, rtol=0, msg=f"{name} differs")


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The process torchrun started as ``rank`` (found through /proc, by its RANK variable)."""
    todo, found = [launcher_pid], None
    while todo:
        pid = todo.pop()
        try:
            todo += map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            found = pid
    return found


def _wait_for_metrics(out: Path, proc: subprocess.Popen) -> Path:
    timeout = deadline(20, 25)
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        runs = [p for p in out.iterdir() if (p / "metrics.jsonl").exists() and (p / "metrics.jsonl").stat().st_size] if out.exists() else []
        if runs:
            return runs[0]
        time.sleep(0.1)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"no metrics.jsonl in {out} within {timeout:.0f} s (rank start {start_s():.1f} s):\n{_finish(proc)[1][-3000:]}")


@pytest.mark.slow
def test_two_ranks_end_with_the_weights_of_one_process_over_the_same_global_batch(tiny_preset, isolated):
    single = _single_process(tiny_preset, isolated / "one", EXACT)
    code, out = _finish(_genwb(tiny_preset, "--out", isolated / "two", "--nproc", 2, *EXACT, cwd=isolated))
    assert code == 0, out[-3000:]
    ddp = open_run(_only_run(isolated / "two"))
    _assert_same_weights(single, ddp)
    assert ddp.status()["state"] == "finished"
    rows, expected = ddp.read_metrics(), single.read_metrics()
    assert [(r["split"], r["step"]) for r in rows] == [(r["split"], r["step"]) for r in expected], "rank 0 alone logs"
    for r, e in zip(rows, expected):  # the logged loss is the global batch's mean, not rank 0's share
        assert r.get("loss", r.get("nll")) == pytest.approx(e.get("loss", e.get("nll")), rel=1e-5)
    assert out.count("run ") == 1 and "error" not in out.lower()


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_all_at_one_step_and_the_resume_logs_each_step_once(tiny_preset, isolated):
    many = ["--set", "train.max_steps=100000", "--set", "train.checkpoint_every=1000"]
    proc = _genwb(tiny_preset, "--out", isolated / "two", "--nproc", 2, *EXACT, *many, cwd=isolated)
    run_dir = _wait_for_metrics(isolated / "two", proc)
    pid = _rank_pid(proc.pid, 1)
    assert pid, "rank 1 not found"
    os.kill(pid, signal.SIGTERM)  # one rank only, as when a scheduler signals one process
    code, out = _finish(proc)
    assert code != 0, out[-3000:]
    run = open_run(run_dir)
    status, last = run.status(), run.load_checkpoint("last")
    assert status["state"] == "interrupted", (status, out[-3000:])
    stopped = last["step"]
    assert status["step"] == stopped and len(last["rng_ranks"]) == 2
    assert f"genwb run --resume {run_dir} --nproc 2" in out

    total = stopped + 4
    code, out = _finish(_genwb("--resume", run_dir, "--nproc", 2, "--set", f"train.max_steps={total}", cwd=isolated))
    assert code == 0, out[-3000:]
    run = open_run(run_dir)
    assert run.status()["state"] == "finished" and run.load_checkpoint("last")["step"] == total
    steps = [r["step"] for r in run.read_metrics() if r["split"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == total, "every step logged exactly once"
    assert steps == list(range(2, total + 1, 2)) + ([total] if total % 2 else [])

    single = _single_process(tiny_preset, isolated / "one", [*EXACT, f"train.max_steps={total}"])
    _assert_same_weights(single, run)  # the resume picked up the optimiser and the step exactly


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_within_the_timeout(tiny_preset, isolated):
    proc = _genwb(tiny_preset, "--out", isolated / "two", "--nproc", 2, *EXACT, "--set", "train.max_steps=100000",
                  cwd=isolated)
    run_dir = _wait_for_metrics(isolated / "two", proc)
    os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
    killed = time.monotonic()
    code, out = _finish(proc)
    waited, limit = time.monotonic() - killed, float(_env()["GENWB_DDP_TIMEOUT"]) + deadline(5, 5)
    assert waited < limit, f"the other rank waited {waited:.1f} s, more than {limit:.0f} s"
    assert code == 1, out[-3000:]
    status = open_run(run_dir).status()
    assert status["state"] == "failed" and "--nproc 2" in status["error"], status
    assert "\n" not in status["error"]
    assert not _marked_processes(), "a rank outlived the launcher"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_hung_rank_fails_the_others_after_the_timeout_and_the_run_says_so(tiny_preset, isolated):
    """Rank 0 stops answering (SIGSTOP): rank 1 gives up after GENWB_DDP_TIMEOUT instead of
    waiting for ever; rank 0 then dies without a word, so the launcher marks the run failed."""
    proc = _genwb(tiny_preset, "--out", isolated / "two", "--nproc", 2, *EXACT, "--set", "train.max_steps=100000",
                  cwd=isolated, timeout_s=(hang := round(deadline(3, 1))))
    run_dir = _wait_for_metrics(isolated / "two", proc)
    rank0, rank1 = _rank_pid(proc.pid, 0), _rank_pid(proc.pid, 1)
    os.kill(rank0, signal.SIGSTOP)
    hung = time.monotonic()
    while _running(rank1) and time.monotonic() - hung < hang + deadline(25, 10):
        time.sleep(0.1)
    waited = time.monotonic() - hung
    os.kill(rank0, signal.SIGKILL)
    code, out = _finish(proc)
    assert hang - 1 < waited < hang + deadline(20, 5), f"rank 1 gave up after {waited:.1f} s with a {hang} s timeout"
    assert code == 1 and "error: rank 1 lost the other ranks" in out, out[-3000:]
    status = open_run(run_dir).status()
    assert status["state"] == "failed" and "a rank died" in status["error"] and "--nproc 2" in status["error"], status
    assert not _marked_processes(), "a rank outlived the launcher"


def _vq_rank(rank: int, port: int, out: str) -> None:
    """One rank of an in-process 2-rank run of an EMA VQ-VAE with k-means and dead-code
    restarts; saves the rank's parameters."""
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GENWB_DDP_TIMEOUT="30")
    torch.set_num_threads(1)
    world = distributed.from_env()
    distributed.setup(world, torch.device("cpu"))
    try:
        config = load_config(ROOT / "presets" / "vqvae_ema.toml", [
            "run.device=cpu", "data.val_size=40", "data.batch_size=16", "model.channels=8", "model.res_channels=4",
            "model.num_codes=8", "model.usage_window=3", "train.max_steps=8", "train.val_every=4", "train.val_batches=1",
            "eval.batch_size=20", "sample.every=0", "eval.test=false"])
        path = distributed.broadcast_object(str(Run.create(config, out).path) if world.main else None)
        trainer = Trainer(open_run(path).config, open_run(path))
        trainer.fit()
        torch.save(dict(trainer.model.named_parameters()), f"{out}/rank{rank}.pt")
    finally:
        distributed.teardown()


@pytest.mark.slow
def test_every_rank_holds_the_same_parameters_vq_vae_codebook_included(tiny_data, isolated):
    """k-means, dead-code restarts and the EMA write the codebook outside autograd, from each
    rank's share; rank 0's codebook is broadcast after every step, so the ranks never drift."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_vq_rank, args=(port, str(isolated)), nprocs=2, join=True)
    a, b = torch.load(isolated / "rank0.pt", weights_only=True), torch.load(isolated / "rank1.pt", weights_only=True)
    assert "quantizer.embedding" in a and a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between the ranks"


def test_a_batch_that_does_not_split_is_one_line_before_anything_starts(tiny_preset, isolated):
    code, out = _finish(_genwb(tiny_preset, "--out", isolated / "two", "--nproc", 3, cwd=isolated))
    assert code == 2 and out.strip().splitlines() == [
        "error: [data] batch_size = 20 cannot be split over 3 processes; use a multiple of 3 (it is the global batch)"]
    assert not (isolated / "two").exists()


def test_a_single_process_run_never_starts_torch_distributed(tiny_preset, isolated, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.from_env() is None
    run = _single_process(tiny_preset, isolated / "one", ["train.max_steps=2", "eval.test=false", "sample.every=0"])
    assert not torch.distributed.is_initialized()
    assert "rng_ranks" not in run.load_checkpoint("last")


def test_world_and_timeout_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.from_env() == distributed.World(rank=2, local_rank=0, size=4)
    monkeypatch.setenv("GENWB_DDP_TIMEOUT", "7.5")
    assert distributed.timeout_s() == 7.5
    monkeypatch.setenv("GENWB_DDP_TIMEOUT", "soon")
    with pytest.raises(Exception, match="GENWB_DDP_TIMEOUT"):
        distributed.timeout_s()


@pytest.mark.slow
def test_sigterm_to_the_launcher_is_one_clean_stop(tiny_preset, isolated, monkeypatch):
    """SIGTERM to ``genwb run --nproc 2`` (as ``kill PID`` from a user): the ranks checkpoint and
    print the resume command, exit 143, and neither torchrun's agent traceback (SignalException)
    nor its OMP_NUM_THREADS banner shows. Catches: the launcher running plain torchrun, not
    setting OMP_NUM_THREADS, or returning the agent's exit code instead of 143."""
    env = {k: v for k, v in _env().items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "run", str(tiny_preset), "--out", str(isolated / "two"),
                             "--nproc", "2", *EXACT, "--set", "train.max_steps=100000", "--set", "train.checkpoint_every=1000"],
                            cwd=isolated, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    run_dir = _wait_for_metrics(isolated / "two", proc)
    os.kill(proc.pid, signal.SIGTERM)
    code, out = _finish(proc)
    assert code == 143, out[-3000:]
    assert f"genwb run --resume {run_dir} --nproc 2" in out, out[-3000:]
    for noise in ("Traceback", "SignalException", "OMP_NUM_THREADS"):
        assert noise not in out, out[-3000:]
    assert open_run(run_dir).status()["state"] == "interrupted"
