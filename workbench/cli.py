"""The ``genwb`` command line. Heavy modules (torch, the TUI) are imported inside commands, so
``genwb --help`` answers at once and ``genwb run`` never loads Textual."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

import click


class _Group(click.Group):
    """The one place where every error a user can cause becomes one line on stderr and an exit
    code, with no traceback: UserError (its own code: 2 bad input, 1 a run that failed), bad
    command-line usage (2, without click's usage block), a file-system error (1), running out of
    memory (1) and Ctrl-C (130). Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        from workbench.errors import UserError, one_line

        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {one_line(e)}", err=True)
            ctx.exit(e.exit_code)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else ctx.command_path
            click.echo(f"error: {one_line(e.format_message())} (see {where} --help)", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("\nerror: interrupted", err=True)
            ctx.exit(130)
        except MemoryError:
            click.echo("error: out of memory; use smaller settings", err=True)
            ctx.exit(1)
        except OSError as e:
            from workbench.errors import os_error_text

            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{os_error_text(e)}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genwb")
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="The app: the runs folder (and its job queue) to open.")
@click.option("--image-protocol", type=click.Choice(["auto", "kitty", "sixel", "halfcell"]),
              help="The app: how to draw images (default: $GENWB_IMAGE_PROTOCOL, the user config, else auto).")
@click.option("--cpu-slots", type=click.IntRange(min=1), help="The app: jobs trained at once on the CPU.")
@click.pass_context
def main(ctx, runs_dir, image_protocol, cpu_slots):
    """genwb: train, sample and evaluate VAEs and autoregressive image models.

    With no command, opens the app on --runs: the job queue, curves, samples, runs and FID/IS."""
    if ctx.invoked_subcommand is not None:
        return
    from workbench.tui import app as tui_app
    from workbench.tui.settings import resolve_image_protocol

    app = tui_app.create_app(runs_dir, image_protocol=resolve_image_protocol(image_protocol), cpu_slots=cpu_slots)
    try:
        app.run()
    finally:
        app.close_queue()


@main.command()
@click.argument("preset", required=False, type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a preset value (repeatable).")
@click.option("--out", "out_dir", type=click.Path(), help="Folder for run folders (default: [run] out, runs/).")
@click.option("--device", help="auto, cpu, cuda or cuda:N (default: [run] device).")
@click.option("--resume", "resume_dir", type=click.Path(), help="Continue a run (from step 0 if it wrote no checkpoint yet).")
@click.option("--checkpoint", "which", type=click.Choice(["last", "best"]), default="last", show_default=True,
              help="With --resume: the checkpoint to continue from.")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Train data-parallel in N processes on this machine (one per GPU; gloo on a CPU) through "
                   "torchrun (default: [run] gpus, 1; an explicit --nproc wins over it).")
def run(preset, overrides, out_dir, device, resume_dir, which, nproc):
    """Train a model from PRESET (a TOML file), headless, with a progress bar.

    Ctrl-C, SIGTERM and SIGHUP finish the step, write a checkpoint, print the command that
    resumes, and exit with 130, 143 and 129. Under torchrun (or with --nproc) each process
    trains on its share of every batch; the batch size stays the preset's."""
    from workbench.errors import UserError

    if bool(preset) == bool(resume_dir):
        raise UserError("give a PRESET to start a run, or --resume RUN_DIR to continue one (not both)")
    if which != "last" and not resume_dir:
        raise UserError("--checkpoint chooses where a resume starts; use it with --resume RUN_DIR")
    from workbench import distributed
    from workbench.launch import launch, run_config

    world = distributed.from_env()
    if nproc is None:  # [run] gpus of the run to start or resume
        nproc = 1 if world is not None else run_config(preset, overrides, resume_dir).run.gpus
    if nproc > 1:
        if world is not None:
            raise UserError("--nproc starts torchrun itself; under torchrun leave it out")
        if resume_dir:  # refused before torchrun starts; rank 0 takes the lease itself
            _refuse_if_written(resume_dir)
        sys.exit(launch(nproc, preset, overrides, out_dir, device, resume_dir, which))
    from workbench.config import load_config
    from workbench.devices import resolve_device
    from workbench.runs import Run, check_resume, open_run, prepare, writing
    from workbench.signals import NAMES, StopSignals

    cancel = threading.Event()

    def on_stop(signum):
        cancel.set()
        if world is not None and not world.main:  # rank 0 speaks for the run
            return
        again = " (Ctrl-C again to abort)" if signum == signal.SIGINT else ""
        click.echo(f"\n{NAMES[signum]}: finishing this step and writing a checkpoint{again}", err=True)

    held = contextlib.ExitStack()  # the run's writer lease, from before its first write to the end

    def start():
        if resume_dir:
            run = open_run(resume_dir)
            held.enter_context(writing(run.path, "trained", "genwb run"))
            resolve_device(device or run.config.run.device)
            if overrides or (device and device != run.config.run.device):
                # checked against the checkpoint before config.toml is rewritten
                config = load_config(run.path / "config.toml", list(overrides))
                check_resume(run, config, which)
                config.run.device = device or config.run.device  # config.toml says what is in force
                run.config = config
                run.save_config()
            else:
                prepare(run.config)
        else:
            config = load_config(preset, list(overrides))
            resolve_device(device or config.run.device)  # refuse a missing GPU before making a run folder
            prepare(config)
            if stop.received:
                click.echo(f"{stop.name}: stopped before the run started; nothing was written", err=True)
                sys.exit(stop.exit_code)
            config.run.device = device or config.run.device
            run = Run.create(config, out_dir)
            held.enter_context(writing(run.path, "trained", "genwb run"))
        return run

    with StopSignals(on_stop) as stop, held:
        if world is None:
            _train(start(), device, bool(resume_dir), which, cancel, stop)
            return
        from workbench.launch import start_rank

        run, rank_device = start_rank(world, start, preset, overrides, device, resume_dir)
        try:
            _train(run, rank_device, bool(resume_dir), which, cancel, stop, world)
        finally:
            distributed.teardown()


def _refuse_if_written(run_dir) -> None:
    """``lease.Busy`` (one line, exit 2) if another process holds the run's writer lease."""
    from pathlib import Path

    from workbench.lease import Busy
    from workbench.runs import run_holder

    if Path(run_dir).is_dir():
        who = run_holder(run_dir)
        if who is not None:
            raise Busy(run_dir, who)


def _train(run, device, resume: bool, which: str, cancel, stop, world=None) -> None:
    from workbench.headless import HeadlessReporter
    from workbench.train import Trainer

    trainer = Trainer(run.config, run, device=device, resume=resume, cancel=cancel, checkpoint=which)
    trainer.stop_state = "interrupted"  # only a signal sets the cancel flag here
    resume_command = trainer._resume_command()
    try:
        if world is None or world.main:  # one rank reports
            with HeadlessReporter() as reporter:
                trainer.subscribe(reporter)
                done = trainer.fit()
        else:
            done = trainer.fit()
        if world is not None:  # rank 0 has written the run's last files before any rank leaves
            from workbench import distributed

            distributed.barrier()
    except KeyboardInterrupt:  # a second Ctrl-C: the last checkpoint is where a resume starts
        start = f" from step {trainer.saved_step}" if trainer.saved_step else ""
        click.echo(f"\naborted at step {trainer.step}; resume{start} with: {resume_command}", err=True)
        sys.exit(130)
    if done.reason == "cancelled":
        if world is None or world.main:
            click.echo(f"stopped at step {done.step}; resume with: {resume_command}", err=True)
        sys.exit(stop.exit_code or (143 if world else 130))  # a rank stopped by another's signal: as SIGTERM
    if world is not None and not world.main:
        return
    results = run.read_eval()
    if "test_nll" in results:
        from workbench.runindex import nll_kind

        kind = nll_kind(results)
        click.echo(f"test: nll {results['test_nll']:.3f} nats, {results['test_bpd']:.4f} bits/dim ({kind})")
    click.echo(f"done: {run.path}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--mode", type=click.Choice(["samples", "recon", "interpolate", "classes", "progress", "codes"]),
              default="samples", show_default=True,
              help="samples; recon (test images above their reconstructions); interpolate (rows between pairs "
                   "of encoded test images); classes (one latent or noise across every class); progress (frames "
                   "as an image is generated: PNG strip and GIF); codes (VQ-VAE code grids and codebook usage).")
@click.option("-n", "n", type=int, help="Images (pairs, rows) to make; default 64 samples, 32 recon, 16 codes, 8 otherwise.")
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="Autoregressive models: logits / T (1 exact, towards 0 greedy); VAEs: T x the prior's std.")
@click.option("--mean/--no-mean", default=None,
              help="Latent models: the decoder's mean E[x|z], or draws from p(x|z). Default: the mean for a "
                   "binarised VAE or CVAE (as the app's session shows them), draws otherwise.")
@click.option("--label", "label", type=int, help="Class to generate (conditional models).")
@click.option("--mix", help="Class mixture for conditional models, e.g. 3:0.5,7:0.5 (weights are normalised).")
@click.option("--steps", type=int, help="--mode interpolate: images per row, ends included (default 9).")
@click.option("--slerp", is_flag=True, help="--mode interpolate: spherical instead of linear (vae, cvae).")
@click.option("--every", type=int, help="--mode progress: subpixels (codes) between frames (default: about 24 frames).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint", "which", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="PNG file (default: RUN_DIR/samples/<mode>-<time>.png).")
@click.option("--scale", type=int, default=1, show_default=True, help="Enlarge the pictures (nearest neighbour).")
@click.option("--device", default="auto", show_default=True)
def sample(run_dir, mode, n, temperature, mean, label, mix, steps, slerp, every, seed, which, out_file, scale, device):
    """Draw from a run's model and save the pictures; prints the paths written."""
    from pathlib import Path

    from workbench import sampling
    from workbench.runs import writing

    run, model = sampling.load(run_dir, which, device)
    if mean is None:  # only samples and classes draw from p(x|z); recon and progress always show the mean
        mean = mode in ("samples", "classes") and sampling.default_mean(model)
    inside = out_file is None or Path(out_file).resolve().is_relative_to(run.path.resolve())
    with writing(run.path, "sampled", "genwb sample", advice="wait for it or stop it first, or write the pictures "
                 "elsewhere with --out FILE") if inside else contextlib.nullcontext():  # a reader, writing elsewhere
        paths, note = sampling.write(run, model, mode, n=n, label=label, mix=None if mix is None else sampling.parse_mix(mix),
                                     temperature=temperature, mean=mean, steps=steps, slerp=slerp, every=every,
                                     seed=seed, out=out_file, scale=scale)
    for path in paths:
        click.echo(path)
    if note:
        click.echo(note, err=True)


@main.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-n", "n", default=10000, show_default=True, help="Number of samples to draw.")
@click.option("--extractor", type=click.Choice(["classifier", "inception"]), default="classifier", show_default=True,
              help="Features: a classifier trained on the dataset, or the FID Inception v3.")
@click.option("--inception-weights", type=click.Path(dir_okay=False), help="pt_inception-2015-12-05 weights file (pytorch-fid).")
@click.option("--batch-size", default=500, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def evaluate(run_dir, n, extractor, inception_weights, batch_size, seed, device):
    """FID, KID, IS, precision/recall, conditional accuracy and test NLL of a run's best model."""
    from rich.console import Console

    from workbench.evaluate import check_arguments, evaluate_run, results_table
    from workbench.runs import open_run, writing

    check_arguments(n, batch_size)
    with writing(open_run(run_dir).path, "evaluated", "genwb eval"):  # refused at once while another writes the run
        result = evaluate_run(run_dir, n=n, extractor=extractor, inception_weights=inception_weights,
                              batch_size=batch_size, device=device, seed=seed)
    if result.get("warning"):
        click.echo(f"warning: {result['warning']}", err=True)
    Console().print(results_table(result))


@main.group()
def data():
    """Datasets: where they are found."""


@data.command("prepare-classifier")
@click.option("--dataset", default="fashion-mnist", show_default=True)
@click.option("--domain", type=click.Choice(["grey", "binary", "both"]), default="both", show_default=True,
              help="grey for 256- or multi-level runs, binary for binarised ones.")
@click.option("--root", help="A folder to search first for the dataset (as [data] root).")
@click.option("--device", default="auto", show_default=True)
def data_prepare_classifier(dataset, domain, root, device):
    """Train (once) the dataset classifier genwb eval reads samples with, ahead of a batch script."""
    from workbench.devices import resolve_device
    from workbench.features import DOMAINS, load_classifier

    dev = resolve_device(device)
    for name in DOMAINS if domain == "both" else (domain,):
        extractor = load_classifier(dataset, root, device=dev, domain=name)
        click.echo(f"{name} classifier of {dataset}: test accuracy {extractor.test_accuracy:.4f}")


@data.command("list")
@click.option("--root", help="A folder to search first (as [data] root).")
def data_list(root):
    """Show each dataset and where it was found."""
    from rich.console import Console
    from rich.table import Table

    from workbench.data import describe_datasets

    table = Table("dataset", "shape", "found at")
    for row in describe_datasets(root):
        table.add_row(*row)
    Console().print(table)


@main.command("models")
def list_models():
    """List the registered models and their hyper-parameters."""
    import models

    for name in models.names():
        hp = ", ".join(f"{k}={v!r}" for k, v in models.hyperparameters(name).items())
        click.echo(f"{name}: {hp}")


# -- runs in other tools, and compared (workbench.tensorboard, workbench.wandb_export, workbench.rundiff) --
@main.group()
def export():
    """Write run folders in the formats of the tools researchers use: TensorBoard, W&B."""


@export.command("tensorboard")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="A separate log dir, one subfolder per run (default: each run's own folder).")
def export_tensorboard(run_dirs, out_dir):
    """TensorBoard events of each RUN (trained with or without [log] tensorboard): its scalars,
    samples, config and hparams with the final metrics. A repeated export replaces the last."""
    import os

    from workbench.tensorboard import export_runs

    for run_dir, done in export_runs(run_dirs, out_dir):
        replaced = f", replacing {done['replaced']} event file(s)" if done["replaced"] else ""
        click.echo(f"{run_dir}: {done['scalars']} scalars at {done['steps']} steps, {done['images']} images, "
                   f"config and hparams -> {done['path']}{replaced}")
    logdir = out_dir or os.path.commonpath([os.path.abspath(p) for p in run_dirs])
    click.echo(f"view them: tensorboard --logdir {logdir}", err=True)


@export.command("wandb")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where the offline runs go, as OUT/wandb/offline-run-* (default: each run's own folder).")
@click.option("--project", default="genwb", show_default=True, help="The W&B project a later wandb sync uploads to.")
def export_wandb(run_dirs, out_dir, project):
    """An offline W&B run of each RUN: config, scalars at their steps, samples, and the final
    metrics as its summary. Never online: upload later with wandb sync, or read it with wandb leet."""
    from workbench.wandb_export import export_runs

    for run_dir, folder in export_runs(run_dirs, out_dir, project):
        click.echo(f"{run_dir} -> {folder}")
    click.echo("upload them with: wandb sync PATH (offline-run-* folders above); look at them with: wandb leet PATH", err=True)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
def diff(run_dirs):
    """The config keys that differ between RUN_A RUN_B [RUN_C...], and their final metrics side
    by side (best validation NLL, bits/dim, test NLL, FID, IS, steps, wall time)."""
    from rich.console import Console

    from workbench.rundiff import diff_runs, diff_tables

    console = Console()
    for table in diff_tables(diff_runs(list(run_dirs))):
        console.print(table)


# -- the job queue (workbench.jobs) ------------------------------------------------------------------
_RUNS = click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(file_okay=False),
                     help="The runs folder whose queue.json to use.")


@main.command()
@_RUNS
@click.option("--host", default="localhost", show_default=True, help="The address to listen on (keep localhost; reach it over ssh -L).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="The port to listen on.")
def serve(runs_dir, host, port):
    """The app in a web browser (textual-serve): each browser tab runs `genwb --runs RUNS`."""
    from workbench.tui.serve import serve as serve_app

    serve_app(runs_dir, host, port, echo=click.echo)


@main.group()
def queue():
    """The job queue of a runs folder: add, list, cancel, pause, resume, and work it headless."""


@contextlib.contextmanager
def _client(runs_dir):
    from workbench.jobs import JobQueue

    q = JobQueue(runs_dir, work=False)
    try:
        yield q
    finally:
        q.shutdown()


def _job_command(runs_dir, job_id: str, op: str, *args) -> None:
    """``q.<op>(job_id, *args)`` as a client: the owner applies it within a moment, or, with no
    owner alive, it is applied now."""
    with _client(runs_dir) as q:
        getattr(q, op)(job_id, *args)
        blocked = q.job(job_id).blocked if op == "resume" else None
    click.echo(f"{job_id}: {op} {'requested' if q.owner_info() else 'done'}")
    if blocked:
        click.echo(f"{job_id}: its run folder is written by {blocked}; it starts once that stops", err=True)


def _warn_problems(q) -> None:
    for problem in q.problems():
        click.echo(f"warning: {problem}", err=True)


@queue.command("add")
@click.argument("preset", type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a preset value (repeatable).")
@click.option("--after", help="Start only once this job is done (its run folder becomes e.g. model.vqvae_run).")
@click.option("--name", help="Run name (default: [run] name).")
@click.option("--device", help="auto, cpu, cuda or cuda:N (default: [run] device).")
@click.option("--wait", "wait", is_flag=True,
              help="A run folder another process writes now: queue it anyway, to start once that process stops.")
@_RUNS
def queue_add(preset, overrides, after, name, device, wait, runs_dir):
    """Queue a training run from PRESET (a TOML file), or carry on an unfinished run folder from
    its last checkpoint; prints the job id."""
    from pathlib import Path

    from workbench.errors import UserError

    with _client(runs_dir) as q:
        if Path(preset).is_dir():
            if overrides or after or name or device:
                raise UserError(f"{preset} is a run folder: it carries on with its own config; --set, --after, --name "
                                f"and --device go with a preset")
            click.echo(q.submit_resume(preset, wait=wait))
        else:
            if wait:
                raise UserError("--wait goes with a run folder (a new run from a preset never waits for one)")
            click.echo(q.submit(preset, overrides, after=after, name=name, device=device))


@queue.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-n", "n", default=10000, show_default=True, help="Number of samples to draw.")
@click.option("--extractor", type=click.Choice(["classifier", "inception"]), default="classifier", show_default=True)
@click.option("--batch-size", default=500, show_default=True)
@_RUNS
def queue_eval(run_dir, n, extractor, batch_size, runs_dir):
    """Queue genwb eval of RUN_DIR (FID, KID, IS, ... into its eval.json); prints the job id."""
    with _client(runs_dir) as q:
        click.echo(q.submit_eval(run_dir, n=n, extractor=extractor, batch_size=batch_size))


@queue.command("list")
@_RUNS
def queue_list(runs_dir):
    """One line per job: id, name, state, step/total, loss."""
    from workbench.jobreport import job_line

    with _client(runs_dir) as q:
        owner = q.owner_info()
        jobs = q.jobs()
    for info in jobs:
        click.echo(job_line(info))
    _warn_problems(q)
    who = f"worked by pid {owner.get('pid')} on {owner.get('host')}" if owner else "no process works it (genwb queue work)"
    click.echo(f"{len(jobs)} job(s) in {q.path}; {who}", err=True)


def _queue_command(op):
    @click.argument("job_id")
    @_RUNS
    def command(job_id, runs_dir):
        _job_command(runs_dir, job_id, op)

    command.__doc__ = {"cancel": "Cancel a job (a running one checkpoints and stops within a step).",
                       "pause": "Pause a job: it checkpoints and waits until resumed."}[op]
    return queue.command(op)(command)


for _op in ("cancel", "pause"):
    _queue_command(_op)


@queue.command("move")
@click.argument("job_id")
@click.argument("position", type=click.IntRange(0))
@_RUNS
def queue_move(job_id, position, runs_dir):
    """Move a job to POSITION in the queue (0 = first): queued jobs start in this order."""
    _job_command(runs_dir, job_id, "move", position)


@queue.command("remove")
@click.argument("job_id")
@_RUNS
def queue_remove(job_id, runs_dir):
    """Take a finished job off the list (its run folder stays)."""
    _job_command(runs_dir, job_id, "remove")


@queue.command("resume")
@click.argument("job_id")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change the run's config first (e.g. train.lr after a NaN); checked against its checkpoint.")
@_RUNS
def queue_resume(job_id, overrides, runs_dir):
    """Resume a paused, failed or cancelled job from its last checkpoint."""
    _job_command(runs_dir, job_id, "resume", overrides)


@queue.command("work")
@click.option("--forever", is_flag=True, help="Keep waiting for new jobs instead of exiting once nothing is queued or running.")
@click.option("--cpu-slots", type=click.IntRange(1), help="CPU workers, besides one per GPU (default: 1 without a GPU, none with one).")
@_RUNS
def queue_work(forever, cpu_slots, runs_dir):
    """Own the queue and run its jobs headless until none is left; SIGTERM/SIGHUP/Ctrl-C checkpoint and requeue them."""
    from workbench.errors import UserError
    from workbench.jobreport import QueueReporter
    from workbench.jobs import JobQueue
    from workbench.signals import StopSignals

    stop_requested = threading.Event()
    with StopSignals(lambda signum: stop_requested.set()) as stop, QueueReporter() as reporter:
        q = JobQueue(runs_dir, cpu_slots=cpu_slots, work=True)
        if not q.owner:
            owner = q.owner_info() or {}
            q.shutdown()
            raise UserError(f"{q.runs_dir}: the queue is already worked by process {owner.get('pid')} on "
                            f"{owner.get('host')}; add jobs with genwb queue add, or stop that process first")
        _warn_problems(q)
        q.subscribe(reporter)
        while not stop_requested.is_set() and (forever or q.busy()):
            stop_requested.wait(0.5)
        if stop.received:
            reporter.line(f"{stop.name}: checkpointing running jobs; they resume with the next genwb queue work")
        q.shutdown(wait=True)
    from collections import Counter

    counts = Counter(info.state for info in q.final_jobs)  # this process's truth, whether or not the file took it
    click.echo("queue: " + (", ".join(f"{n} {state}" for state, n in counts.items()) or "empty"), err=True)
    if q.write_error:
        click.echo(f"warning: {q.path} could not be updated ({q.write_error}); it may still list jobs as running, "
                   f"and the next genwb queue work carries them on", err=True)
    if stop.received:
        sys.exit(stop.exit_code)
    if reporter.failed:
        click.echo(f"{len(reporter.failed)} job(s) failed: {', '.join(reporter.failed)}; see genwb queue list --runs {runs_dir}", err=True)
        sys.exit(1)

if __name__ == "__main__":
    main()
