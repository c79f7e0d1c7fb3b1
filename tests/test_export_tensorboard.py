"""TensorBoard events of a run, read back with TensorBoard's own reader (EventAccumulator, which
applies the purge of a resumed session as the TensorBoard UI does): live from the Trainer with
[log] tensorboard = true, after a kill and a resume, and from ``genwb export tensorboard``."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import preset_text, train_tiny
from workbench import events as ev
from workbench.cli import main
from workbench.runs import writing

pytest.importorskip("tensorboardX", reason="tensorboardX is not installed (pip install 'genwb[tensorboard]')")
pytest.importorskip("tensorboard", reason="the tensorboard package (its event reader) is not installed (the test extra)")

ROOT = Path(__file__).resolve().parents[1]
VAE = 'name = "vae"\narch = "mlp"\nhidden = 32\nlatent_dim = 4\niw_samples = 2'
TB = "log.tensorboard=true"


def read_events(logdir: Path) -> dict:
    """What TensorBoard shows of a folder: {"scalars": {tag: [(step, value)]}, "images": {tag:
    [(step, png bytes)]}, "text": [(step, text)], "hparams": {name: value} or None, "ended"}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    hparams, ended = None, None
    if "_hparams_/session_end_info" in acc.summary_metadata:
        content = acc.SummaryMetadata("_hparams_/session_end_info").plugin_data.content
        ended = plugin_data_pb2.HParamsPluginData.FromString(content).session_end_info.status
    if "_hparams_/session_start_info" in acc.summary_metadata:
        content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return {
        "scalars": {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]},
        "images": {t: [(e.step, e.encoded_image_string) for e in acc.Images(t)] for t in tags["images"]},
        "text": [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors("config/text_summary")]
        if "config/text_summary" in tags["tensors"] else [],
        "hparams": hparams,
        "ended": ended,  # the hparams session's end status (api_pb2.Status), None while unended
    }


def raw_steps(logdir: Path, tag: str) -> list[int]:
    """Steps of ``tag`` in the event files as written, without TensorBoard's purge."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


def expected_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key not in ("step", "split"):
                out.setdefault(f"{row['split']}/{key}", []).append((row["step"], value))
    return out


def assert_every_scalar_once(shown: dict, run_dir: Path) -> None:
    """Every scalar of metrics.jsonl is shown once, at its step, with its value (float32), and
    the metrics tags show nothing else."""
    expected = expected_scalars(run_dir)
    assert expected, "no rows"
    for tag, points in expected.items():
        got = shown["scalars"].get(tag)
        assert got is not None, f"{tag} missing"
        assert [s for s, _ in got] == [s for s, _ in points], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), tag


def assert_images(shown: dict, run_dir: Path) -> None:
    """Each samples/step-N.png and recon-step-N.png is an image at step N, byte for byte."""
    for tag, prefix in (("samples", "step-"), ("recon", "recon-step-")):
        files = {int(p.name[len(prefix):-4]): p.read_bytes() for p in (run_dir / "samples").glob(f"{prefix}*.png")}
        assert files, tag
        assert dict(shown["images"][tag]) == files and len(shown["images"][tag]) == len(files)


def final_step(run_dir: Path) -> int:
    return json.loads((run_dir / "status.json").read_text())["step"]


def assert_finals_and_hparams(shown: dict, run_dir: Path) -> None:
    evaluation = json.loads((run_dir / "eval.json").read_text())
    vals = [(s, v) for s, v in expected_scalars(run_dir)["val/nll"]]
    step = final_step(run_dir)
    assert shown["scalars"]["test/nll"] == [(step, pytest.approx(evaluation["test_nll"], rel=1e-6))]
    assert shown["scalars"]["test/bpd"] == [(step, pytest.approx(evaluation["test_bpd"], rel=1e-6))]
    assert shown["scalars"]["val/best_nll"] == [(step, pytest.approx(min(v for _, v in vals), rel=1e-6))]
    hp = shown["hparams"]
    assert hp is not None, "no hparams"
    assert hp["model.name"] == "vae" and hp["model.hidden"] == 32 and hp["train.lr"] == pytest.approx(3e-3)
    assert hp["data.binarize"] == "dynamic" and hp["log.tensorboard"] is True
    assert any("hidden = 32" in text and "[train]" in text for _, text in shown["text"])
    from tensorboard.plugins.hparams import api_pb2

    assert shown["ended"] == api_pb2.STATUS_SUCCESS


@pytest.fixture
def vae_preset(tiny_data, isolated):
    path = isolated / "vae.toml"
    path.write_text(preset_text(VAE, "vae"))
    return path


def test_a_run_with_the_option_writes_every_scalar_once_the_images_and_the_hparams(vae_preset, isolated):
    """Kills: a scalar (epoch, lr, a loss part, a val figure) left out or logged twice, a step
    shifted, an image re-encoded or at the wrong step, hparams or final metrics missing."""
    run_dir = train_tiny(vae_preset, isolated / "runs", [TB])
    (events,) = run_dir.glob("events.out.tfevents.*")
    shown = read_events(run_dir)
    assert_every_scalar_once(shown, run_dir)
    assert {"train/loss", "train/recon", "train/kl", "train/lr", "train/epoch", "val/nll", "val/bpd"} <= set(shown["scalars"])
    assert_images(shown, run_dir)
    assert_finals_and_hparams(shown, run_dir)

    # the export of the same run gives exactly what the live writer gave
    out = isolated / "tb"
    result = CliRunner().invoke(main, ["export", "tensorboard", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = read_events(out / run_dir.name)
    assert exported["scalars"] == shown["scalars"] and exported["images"] == shown["images"]
    assert exported["hparams"] == shown["hparams"]
    assert list(run_dir.glob("events.out.tfevents.*")) == [events]  # --out leaves the run's own events alone


@pytest.mark.slow
def test_a_kill_and_a_resume_show_each_step_once(tiny_data, isolated):
    """SIGKILL mid-run, after a checkpoint and with events logged past it, then genwb run
    --resume: TensorBoard shows every step of metrics.jsonl once. Kills: no purge (or a purge at
    the checkpoint's own step, which drops it), and a new file that sorts before the old one."""
    preset = isolated / "tiny.toml"
    preset.write_text(preset_text(VAE, "vae"))
    runs = isolated / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "run", str(preset), "--out", str(runs),
                             "--set", "train.max_steps=100000", "--set", "train.checkpoint_every=4",
                             "--set", "train.val_every=4", "--set", "sample.every=4", "--set", TB],
                            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import torch

    def events_past_the_checkpoint() -> bool:
        """Read while the process is stopped, so that nothing moves between the look and the
        kill (the events, written by a subscriber thread, may lag the checkpoints under load)."""
        for run_dir in runs.glob("*"):
            if (run_dir / "checkpoints" / "last.pt").exists():
                steps = raw_steps(run_dir, "train/loss")
                checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"]
                return len(steps) >= 7 and max(steps) > checkpoint
        return False

    deadline = time.monotonic() + 300
    while proc.poll() is None:
        proc.send_signal(signal.SIGSTOP)
        if events_past_the_checkpoint():
            break
        proc.send_signal(signal.SIGCONT)
        assert time.monotonic() < deadline, "no events past a checkpoint after 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    (run_dir,) = runs.iterdir()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"]
    killed_at = max(raw_steps(run_dir, "train/loss"))
    assert killed_at > checkpoint  # events past the checkpoint are on disk: the purge has work to do
    total = killed_at + 4
    result = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "--set", f"train.max_steps={total}"])
    assert result.exit_code == 0, result.output
    assert raw_steps(run_dir, "train/loss").count(killed_at) == 2  # written by both sessions ...
    shown = read_events(run_dir)  # ... and shown once
    assert_every_scalar_once(shown, run_dir)
    assert_images(shown, run_dir)
    assert_finals_and_hparams(shown, run_dir)
    assert max(s for s, _ in expected_scalars(run_dir)["train/loss"]) == total


def test_an_in_process_crash_then_resume_shows_each_step_once(vae_preset, isolated):
    """A run that fails (here: an error after the checkpoint at 12, steps 14 logged) and resumes
    in the same process: the failed session's events after 12 are dropped, step 12's are kept."""
    from workbench.config import load_config
    from workbench.runs import Run, open_run
    from workbench.train import Trainer

    config = load_config(vae_preset, [TB])
    run = Run.create(config, isolated / "runs")
    trainer = Trainer(config, run)

    def crash(event):
        if isinstance(event, ev.Step) and event.step == 16:
            raise RuntimeError("power cut")

    trainer.subscribe(crash)
    with pytest.raises(RuntimeError, match="power cut"):
        trainer.fit()
    assert 14 in raw_steps(run.path, "train/loss")
    Trainer(config, open_run(run.path), resume=True).fit()
    shown = read_events(run.path)
    assert_every_scalar_once(shown, run.path)
    assert [s for s, _ in shown["scalars"]["val/nll"]] == [6, 12, 18, 24]
    assert_images(shown, run.path)
    assert_finals_and_hparams(shown, run.path)  # the failed session said nothing of its end


def test_export_of_a_run_trained_without_the_option(vae_preset, isolated):
    """``genwb export tensorboard RUN`` writes the events into the run folder; again, it
    replaces them (nothing shown twice); with --out, one subfolder per run."""
    run_dir = train_tiny(vae_preset, isolated / "runs")
    assert not list(run_dir.glob("events.out.tfevents.*"))
    for _ in range(2):
        result = CliRunner().invoke(main, ["export", "tensorboard", str(run_dir)])
        assert result.exit_code == 0, result.output
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    shown = read_events(run_dir)
    assert_every_scalar_once(shown, run_dir)
    assert_images(shown, run_dir)
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert shown["scalars"]["test/nll"] == [(final_step(run_dir), pytest.approx(evaluation["test_nll"], rel=1e-6))]
    assert shown["hparams"]["log.tensorboard"] is False

    other = shutil.copytree(run_dir, isolated / "elsewhere" / run_dir.name)  # the same name in another runs folder
    out = isolated / "logdir"
    result = CliRunner().invoke(main, ["export", "tensorboard", str(run_dir), str(other), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [run_dir.name, f"{run_dir.name}-2"]
    assert read_events(out / f"{run_dir.name}-2")["scalars"] == shown["scalars"]


def test_eval_figures_become_final_metrics(vae_preset, isolated):
    """FID, IS, ... of each evaluation in eval.json, as the evaluation engineer keys them
    (by extractor today, by extractor and n later), are final scalars: read defensively."""
    run_dir = train_tiny(vae_preset, isolated / "runs")
    evaluation = json.loads((run_dir / "eval.json").read_text())
    evaluation["classifier"] = {"fid": 12.5, "is_mean": 4.25, "kid_mean": 0.5, "n": 1000, "extractor": "classifier"}
    evaluation["inception"] = {"10000": {"fid": 30.0, "is_mean": 3.0, "checkpoint_step": 24}}
    (run_dir / "eval.json").write_text(json.dumps(evaluation))
    result = CliRunner().invoke(main, ["export", "tensorboard", str(run_dir)])
    assert result.exit_code == 0, result.output
    scalars = read_events(run_dir)["scalars"]
    step = final_step(run_dir)
    assert scalars["eval/classifier/fid"] == [(step, 12.5)] and scalars["eval/classifier/is_mean"] == [(step, 4.25)]
    assert scalars["eval/inception/10000/fid"] == [(step, 30.0)]
    assert not any(t.endswith("/n") or t.endswith("checkpoint_step") for t in scalars)


def test_without_tensorboardx_the_option_is_refused_before_any_run_folder(tiny_preset, isolated, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX raises ImportError
    runs = isolated / "runs"
    result = CliRunner().invoke(main, ["run", str(tiny_preset), "--out", str(runs), "--set", TB])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: [log] tensorboard = true needs tensorboardX, which is not installed: pip install 'genwb[tensorboard]'"]
    assert not runs.exists()
    tiny_preset.write_text(tiny_preset.read_text() + "\n[log]\ntensorboard = true\n")
    result = CliRunner().invoke(main, ["run", str(tiny_preset), "--out", str(runs)])
    assert result.exit_code == 2 and "pip install 'genwb[tensorboard]'" in result.output and not runs.exists()
    result = CliRunner().invoke(main, ["export", "tensorboard", str(isolated)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "genwb export tensorboard needs tensorboardX" in result.output


@pytest.mark.parametrize("line, message", [
    ("tensorboard = 1", "tensorboard must be true or false, got 1"),
    ("tensorbord = true", "unknown key 'tensorbord' (did you mean 'tensorboard'?)"),
])
def test_the_log_table_is_validated_like_the_rest(tiny_preset, isolated, line, message):
    tiny_preset.write_text(tiny_preset.read_text() + f"\n[log]\n{line}\n")
    result = CliRunner().invoke(main, ["run", str(tiny_preset), "--out", str(isolated / "runs")])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (isolated / "runs").exists()


def test_a_failing_event_write_warns_once_and_training_goes_on(vae_preset, isolated, monkeypatch):
    """A full disk for the events must not cost the run: one warning that names the export."""
    import errno

    from workbench.tensorboard import EventFile

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(EventFile, "scalars", full)
    seen = []
    run_dir = train_tiny(vae_preset, isolated / "runs", [TB], on_event=seen.append)
    warnings = [e.message for e in seen if isinstance(e, ev.Warned)]
    assert len(warnings) == 1 and "no space left on device" in warnings[0]
    assert f"genwb export tensorboard {run_dir}" in warnings[0]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_export_refuses_what_is_not_a_run_and_a_run_writing_its_own_events(vae_preset, isolated):
    result = CliRunner().invoke(main, ["export", "tensorboard", str(isolated)])
    assert result.exit_code == 2 and "not a run folder" in result.output and len(result.output.strip().splitlines()) == 1
    run_dir = train_tiny(vae_preset, isolated / "runs", [TB])
    before = sorted(run_dir.glob("events.out.tfevents.*"))
    held, release = threading.Event(), threading.Event()

    def train_it():  # another writer holds the run's lease, as a training process does
        with writing(run_dir, "trained", "genwb run"):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=train_it)
    holder.start()
    try:
        held.wait(60)
        result = CliRunner().invoke(main, ["export", "tensorboard", str(run_dir)])
        assert result.exit_code == 2 and "being trained by" in result.output and "--out DIR" in result.output
        assert sorted(run_dir.glob("events.out.tfevents.*")) == before
        result = CliRunner().invoke(main, ["export", "tensorboard", str(run_dir), "--out", str(isolated / "tb")])
        assert result.exit_code == 0, result.output  # a separate log dir is only read from the run
    finally:
        release.set()
        holder.join()


@pytest.mark.slow
def test_a_queue_job_and_a_data_parallel_run_write_the_events_once(vae_preset, isolated):
    """Every path that trains writes events: a queue job (a worker thread), and rank 0 alone of a
    run on two processes (gloo). Kills: the writer attached in genwb run only, or on every rank
    (two files, every step twice)."""
    import torch

    from tests.conftest import wait
    from workbench.jobs import JobQueue

    q = JobQueue(isolated / "queue", cpu_slots=1)
    try:
        job = q.submit(vae_preset, [TB])
        wait(lambda: not q.busy(), "the job")
        info = q.job(job)
        assert info.state == "done", info.error
    finally:
        q.shutdown()
    run_dir = Path(info.run_dir)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    shown = read_events(run_dir)
    assert_every_scalar_once(shown, run_dir)
    assert_finals_and_hparams(shown, run_dir)

    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GENWB_DDP_TIMEOUT": "60"}
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "run", str(vae_preset), "--out", str(isolated / "ddp"),
                          "--nproc", "2", "--set", TB, "--set", "eval.test=false"],
                         cwd=isolated, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = (isolated / "ddp").iterdir()
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    shown = read_events(run_dir)
    assert_every_scalar_once(shown, run_dir)
    assert_images(shown, run_dir)
