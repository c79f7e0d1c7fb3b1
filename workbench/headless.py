"""The headless consumer of training events: a rich progress bar on a terminal, plain log
lines when stdout is a file or a pipe (batch jobs, CI)."""
from __future__ import annotations


from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from workbench import events as ev


def _fmt(metrics: dict[str, float], keys=None) -> str:
    keys = keys or metrics.keys()
    return "  ".join(f"{k} {metrics[k]:.4g}" for k in keys if k in metrics)


def started_line(event: ev.Started) -> str:
    return (f"run {event.run_dir}  device {event.device} ({event.step_mode})  {event.num_params:,} parameters"
            + (f"  resuming after step {event.step}" if event.step else ""))


def step_line(event: ev.Step) -> str:
    return (f"step {event.step}/{event.total_steps}  {_fmt(event.metrics)}  "
            f"lr {event.lr:.3g}  {event.images_per_s:,.0f} img/s")


def evaluated_line(event: ev.Evaluated) -> str:
    best = "  (best)" if event.best else ""
    return (f"{event.split} step {event.step}: nll {event.metrics['nll']:.3f} nats  "
            f"{event.metrics['bpd']:.4f} bits/dim{best}")


def samples_line(event: ev.Samples) -> str:
    return f"{event.kind} step {event.step}: {event.path}"


class ProgressConsole:
    """Rich progress bars on a terminal (``live``), plain printed lines otherwise; use it as a
    context manager. Tasks carry the fields ``loss`` and ``speed``."""

    def __init__(self, console: Console | None = None, live: bool | None = None):
        self.console = console or Console()
        self.live = self.console.is_terminal if live is None else live
        self.progress: Progress | None = None

    def __enter__(self):
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} img/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()

    def line(self, text: str) -> None:
        if self.progress:
            self.progress.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def add_task(self, description: str, event: ev.Started):
        return self.progress.add_task(description, total=event.total_steps, completed=event.step, loss="-", speed="-")

    def update_task(self, task, event: ev.Step) -> None:
        self.progress.update(task, completed=event.step, loss=f"{event.metrics.get('loss', float('nan')):.4g}",
                             speed=f"{event.images_per_s:,.0f}")


class HeadlessReporter(ProgressConsole):
    def __init__(self, console: Console | None = None, live: bool | None = None):
        super().__init__(console, live)
        self.task = None

    def __call__(self, event) -> None:
        if isinstance(event, ev.Started):
            self.line(started_line(event))
            if self.progress:
                self.task = self.add_task(event.run_dir.name, event)
        elif isinstance(event, ev.Step):
            if self.progress:
                self.update_task(self.task, event)
            else:
                self.line(step_line(event))
        elif isinstance(event, ev.Evaluated):
            self.line(evaluated_line(event))
        elif isinstance(event, ev.Samples):
            self.line(samples_line(event))
        elif isinstance(event, ev.Warned):
            self.line(f"warning: {event.message}")
        elif isinstance(event, ev.Failed):
            pass  # the CLI prints the one-line error
        elif isinstance(event, ev.Finished):
            if self.progress and self.task is not None:
                self.progress.update(self.task, completed=event.step)
