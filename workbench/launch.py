"""``genwb run`` over several processes: ``--nproc N`` starts torchrun on this machine, and each
rank that torchrun starts joins the run that rank 0 makes.

The launcher runs torchrun's agent (``python -m workbench.launch --standalone --nproc-per-node N
-m workbench.cli run ...``, the same arguments less ``--nproc``) in its own process group and
forwards its exit code. ``python -m workbench.launch`` is ``python -m torch.distributed.run`` that
ends a signalled launch quietly (exit 128 + the signal, not the agent's traceback), and sets
OMP_NUM_THREADS to the CPUs per rank where the user left it unset (torchrun prints a banner then). A signal to the launcher (Ctrl-C, SIGTERM, SIGHUP) reaches every rank
once as SIGTERM: they stop at the same step and rank 0 writes a checkpoint; the launcher then
exits with 128 + the signal. If a rank dies, torchrun stops the others; rank 0 marks the run
failed where it still can, and the launcher does so where rank 0 itself died.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from workbench import distributed
from workbench.errors import UserError

RUN_FILE_ENV = "GENWB_DDP_RUN_FILE"  # where rank 0 writes the run folder's path for the launcher
SHUTDOWN_TIMEOUT_S = 120  # torchrun waits this long for the ranks to checkpoint after a signal


def torchrun_command(nproc: int, preset, overrides, out_dir, device, resume_dir, which) -> list[str]:
    args = ["run"]
    if preset:
        args.append(str(preset))
    for item in overrides:
        args += ["--set", item]
    if out_dir:
        args += ["--out", str(out_dir)]
    if device:
        args += ["--device", device]
    if resume_dir:
        args += ["--resume", str(resume_dir), "--checkpoint", which]
    return [sys.executable, "-m", "workbench.launch", "--standalone", f"--nproc-per-node={nproc}",
            f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}", "-m", "workbench.cli", *args]


def run_config(preset, overrides, resume_dir):
    """The config of the run to start (PRESET) or to resume (RUN_DIR's config.toml), overrides applied."""
    from workbench.config import load_config

    if not resume_dir:
        return load_config(preset, list(overrides))
    if not (Path(resume_dir) / "config.toml").is_file():
        from workbench.runs import open_run

        open_run(resume_dir)  # says what is wrong
    return load_config(Path(resume_dir) / "config.toml", list(overrides))


def _check(nproc: int, preset, overrides, device, resume_dir) -> None:
    """Refuse at once what every rank would refuse: a batch that does not split, a missing GPU,
    more GPU ranks than GPUs."""
    config = run_config(preset, overrides, resume_dir)
    distributed.check_batch(config.data.batch_size, nproc)
    spec = (device or config.run.device or "auto").strip().lower()
    if spec != "cpu":  # only then are the GPUs counted
        import torch

        from workbench.devices import resolve_device

        if resolve_device(spec).type == "cuda" and nproc > torch.cuda.device_count():
            raise UserError(f"--nproc {nproc} asks for one GPU per process, but this machine has "
                            f"{torch.cuda.device_count()}; use --nproc {torch.cuda.device_count()} or --device cpu")


PARENT_ENV = "GENWB_STOP_WITH_PARENT"  # set by the job queue to its pid


def _wait(proc: subprocess.Popen, on_stop) -> int:
    """``proc.wait()``; launched by the job queue, also stop the ranks (at a checkpoint) if the
    queue's process dies, so that the next owner never finds a second writer on the run."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return proc.wait()
    stopped = False
    while True:
        try:
            return proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            if not stopped and str(os.getppid()) != parent:
                on_stop(signal.SIGTERM)
                stopped = True


def launch(nproc: int, preset, overrides, out_dir, device, resume_dir, which) -> int:
    """Run torchrun with ``nproc`` ranks; returns the exit code to leave with."""
    import click

    from workbench.signals import StopSignals

    _check(nproc, preset, overrides, device, resume_dir)
    with tempfile.TemporaryDirectory(prefix="genwb-ddp-") as tmp:
        run_file = Path(tmp) / "run"
        env = {**os.environ, RUN_FILE_ENV: str(run_file)}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        proc = subprocess.Popen(torchrun_command(nproc, preset, overrides, out_dir, device, resume_dir, which),
                                env=env, start_new_session=True)

        def on_stop(signum):
            # Every process of the launch (torchrun and its ranks) gets SIGTERM once, as from
            # Slurm; a second SIGTERM (torchrun forwarding it) is ignored by the ranks.
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

        with StopSignals(on_stop) as stop:
            try:
                rc = _wait(proc, on_stop)
            except KeyboardInterrupt:  # a second Ctrl-C: abort every rank now
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                raise
        run_dir = run_file.read_text().strip() if run_file.exists() else ""
    if stop.received:
        return stop.exit_code
    if rc != 0 and run_dir:
        from workbench.runs import open_run

        run = open_run(run_dir)
        status = run.status()
        if status.get("state") in ("created", "running"):  # rank 0 died before it could say so
            message = (f"a rank died (torchrun exit code {rc}); resume from the last checkpoint: "
                       f"genwb run --resume {run_dir} --nproc {nproc}")
            run.write_status("failed", int(status.get("step") or 0), message)
            click.echo(f"error: {message}", err=True)
    return rc


def start_rank(world: distributed.World, start, preset, overrides, device, resume_dir):
    """Join the process group; rank 0 validates and makes (or opens) the run with ``start()``
    and sends its path to the others. Returns (run, this rank's device)."""
    from workbench.devices import resolve_device
    from workbench.runs import open_run

    config = run_config(preset, overrides, resume_dir)  # the device, before rank 0 validates the rest
    rank_device = distributed.setup(world, resolve_device(device or config.run.device))
    run, outcome = None, None
    if world.main:
        try:
            run = start()
            outcome = ("ok", str(run.path))
            if os.environ.get(RUN_FILE_ENV):
                Path(os.environ[RUN_FILE_ENV]).write_text(str(run.path))
        except BaseException as e:  # the others leave too, with the same code, instead of waiting
            code = e.exit_code if isinstance(e, UserError) else e.code if isinstance(e, SystemExit) else 1
            distributed.broadcast_object(("error", code))
            distributed.teardown()
            raise
    outcome = distributed.broadcast_object(outcome)
    if outcome[0] == "error":  # rank 0 said why
        distributed.teardown()
        sys.exit(outcome[1])
    if run is None:
        run = open_run(outcome[1])
    return run, str(rank_device)


def agent_main(argv: list[str]) -> int:
    """torchrun's agent; a signal (the launcher's SIGTERM) stops the ranks as torchrun does, then
    exits with 128 + the signal without the agent's traceback."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main

    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)  # "Received SIGTERM..." lines
    try:
        main(argv)
    except SignalException as e:
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(agent_main(sys.argv[1:]))
