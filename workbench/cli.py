"""The ``genwb`` command line. Heavy modules (torch, the TUI) are imported inside commands, so
``genwb --help`` answers at once and ``genwb run`` never loads Textual."""
from __future__ import annotations

import signal
import sys
import threading

import click


class _Group(click.Group):
    """Turn UserError into one line on stderr and its exit code, with no traceback."""

    def invoke(self, ctx):
        from workbench.errors import UserError

        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genwb")
def main():
    """genwb: train, sample and evaluate VAEs and autoregressive image models."""


@main.command()
@click.argument("preset", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a preset value (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder for run folders (default: [run] out, runs/).")
@click.option("--device", help="auto, cpu, cuda or cuda:N (default: [run] device).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Continue a run from its last checkpoint.")
def run(preset, overrides, out_dir, device, resume_dir):
    """Train a model from PRESET (a TOML file), headless, with a progress bar."""
    from workbench.config import load_config
    from workbench.devices import resolve_device
    from workbench.errors import UserError
    from workbench.runs import Run, open_run

    if bool(preset) == bool(resume_dir):
        raise UserError("give a PRESET to start a run, or --resume RUN_DIR to continue one (not both)")
    if resume_dir:
        run = open_run(resume_dir)
        if overrides:
            run.config = load_config(run.path / "config.toml", list(overrides))
            run.save_config()
    else:
        config = load_config(preset, list(overrides))
        resolve_device(device or config.run.device)  # refuse a missing GPU before making a run folder
        run = Run.create(config, out_dir)
    _train(run, device, resume=bool(resume_dir))


def _train(run, device, resume: bool) -> None:
    from workbench.headless import HeadlessReporter
    from workbench.train import Trainer

    trainer = Trainer(run.config, run, device=device, resume=resume)
    cancel = trainer.cancel

    def on_sigint(signum, frame):
        if cancel.is_set():  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        cancel.set()
        click.echo("\ninterrupt: finishing this step and writing a checkpoint (Ctrl-C again to abort)", err=True)

    previous = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
    try:
        with HeadlessReporter() as reporter:
            trainer.subscribe(reporter)
            done = trainer.fit()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if done.reason == "cancelled":
        click.echo(f"stopped at step {done.step}; resume with: genwb run --resume {run.path}", err=True)
        sys.exit(130)
    results = run.read_eval()
    if "test_nll" in results:
        kind = "exact" if results["likelihood"] == "exact" else "an upper bound, from the model's lower bound on log p(x)"
        click.echo(f"test: nll {results['test_nll']:.3f} nats, {results['test_bpd']:.4f} bits/dim ({kind})")
    click.echo(f"done: {run.path}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-n", "n", default=64, show_default=True, help="Number of samples.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="PNG file (default: RUN_DIR/samples/sample-<time>.png).")
@click.option("--checkpoint", "which", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--label", "label", type=int, help="Class to generate (conditional models).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def sample(run_dir, n, out_file, which, label, seed, device):
    """Draw samples from a run and save them as an image grid."""
    import datetime as dt

    import torch

    from workbench.devices import resolve_device
    from workbench.errors import UserError
    from workbench.images import save_grid
    from workbench.runs import open_run

    run = open_run(run_dir)
    dev = resolve_device(device)
    model = run.load_model(which, dev)
    if label is not None and model.num_classes is None:
        raise UserError(f"--label given, but {run.path.name} is not class-conditional")
    if label is not None and not 0 <= label < model.num_classes:
        raise UserError(f"--label {label} is out of range; classes are 0 to {model.num_classes - 1}")
    torch.manual_seed(seed)
    images = model.sample(n, y=label)
    path = out_file or run.path / "samples" / f"sample-{dt.datetime.now():%Y%m%d-%H%M%S}.png"
    click.echo(save_grid(images, path))


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

    from workbench.evaluate import evaluate_run, results_table

    result = evaluate_run(run_dir, n=n, extractor=extractor, inception_weights=inception_weights,
                          batch_size=batch_size, device=device, seed=seed)
    Console().print(results_table(result))


@main.group()
def data():
    """Datasets: where they are found."""


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


if __name__ == "__main__":
    main()
