"""TensorBoard event files of a run: written live from the Trainer's event stream
(``[log] tensorboard = true``) or afterwards from the run folder (``genwb export tensorboard``).

Both write the same things, through ``workbench.runlog``: every scalar of metrics.jsonl at its
step under "<split>/<key>" tags (``train/loss``, ``val/nll``), each sample grid ("samples") and
reconstruction strip ("recon") as an image at its step (the PNG file's own bytes), the resolved
config as text ("config") and as hparams, and at the end the final figures (best validation,
test, each evaluation's FID, IS, ...) as scalars, which TensorBoard's hparams view shows as the
run's metrics. No experiment summary is written, so ``tensorboard --logdir runs`` compares runs
of different models on the union of their hyper-parameters.

tensorboardX (the ``tensorboard`` extra) supplies the protocol buffers; the records are written
here, each event with one unbuffered ``write``, so a run killed at any moment leaves whole
records, and nothing waits in a buffer or a writer thread: training pays for a proto and a
write per logged row. A resumed run's file starts with a session-start event at the step after
its checkpoint (``purge_step``): TensorBoard drops what the earlier session logged from there
on, so it shows each step once, as metrics.jsonl does.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, Callable

from workbench import events as ev
from workbench import runlog
from workbench.errors import UserError, os_error_text
from workbench.fileio import read_json

INSTALL = "pip install 'genwb[tensorboard]'"
_EVENT_FILES = "events.out.tfevents.*"


def require(what: str = "[log] tensorboard = true") -> None:
    """Refuse ``what`` where tensorboardX cannot be imported, in one line with the install line."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise UserError(f"{what} needs tensorboardX, which is not installed: {INSTALL}") from None


class EventFile:
    """One new event file in ``logdir``. Its name sorts after every earlier file of the folder
    (TensorBoard reads a folder's files in name order), also within one second."""

    def __init__(self, logdir: str | Path, purge_step: int | None = None):
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.record_writer import masked_crc32c

        self._Event, self._Summary, self._crc = Event, Summary, masked_crc32c
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        now = time.time_ns()
        self.path = self.logdir / f"events.out.tfevents.{now // 10**9:010d}.{socket.gethostname()}.{now % 10**9:09d}.genwb"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self.write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            self.write(Event(wall_time=time.time(), step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def write(self, event) -> None:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        record = memoryview(header + struct.pack("<I", self._crc(header)) + data + struct.pack("<I", self._crc(data)))
        while record:
            record = record[os.write(self._fd, record):]

    def summary(self, step: int, values: list, wall_time: float | None = None) -> None:
        self.write(self._Event(wall_time=wall_time or time.time(), step=step, summary=self._Summary(value=values)))

    def scalars(self, step: int, scalars: dict[str, float], wall_time: float | None = None) -> None:
        """All of a row's scalars in one event."""
        if scalars:
            Value = self._Summary.Value
            self.summary(step, [Value(tag=tag, simple_value=value) for tag, value in scalars.items()], wall_time)

    def image(self, step: int, tag: str, png: str | Path) -> None:
        """A PNG file as it is (no decoding and encoding again)."""
        from PIL import Image

        path = Path(png)
        data = path.read_bytes()
        with Image.open(path) as img:
            (width, height), channels = img.size, len(img.getbands())
        image = self._Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=data)
        self.summary(step, [self._Summary.Value(tag=tag, image=image)])

    def config(self, step: int, config: dict[str, dict[str, Any]], toml_text: str) -> None:
        """The config as text (a TOML code block) and as hparams (lists as their TOML text)."""
        from tensorboardX.summary import hparams, text

        from workbench.config import toml_value

        block = "\n".join("    " + line for line in toml_text.splitlines())
        self.write(self._Event(wall_time=time.time(), step=step, summary=text("config", block)))
        flat = {k: v if isinstance(v, (bool, int, float, str)) else toml_value(v) for k, v in runlog.flat_config(config).items()}
        _, start, _ = hparams(flat, {})
        self.write(self._Event(wall_time=time.time(), step=step, summary=start))

    def finals(self, step: int, run_dir: Path) -> None:
        """The final figures as scalars at ``step``, and the hparams session's end. Only a run
        that ended gets them: TensorBoard keeps the first session end it reads whatever comes
        after, so a failed or stopped run that is resumed must not have said it ended."""
        from tensorboardX.summary import hparams

        self.scalars(step, runlog.final_metrics(runlog.read_rows(run_dir), runlog.read_eval(run_dir)))
        _, _, end = hparams({}, {})  # STATUS_SUCCESS
        self.write(self._Event(wall_time=time.time(), step=step, summary=end))

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class EventWriter:
    """The Trainer's subscriber (rank 0 of a run with ``[log] tensorboard = true``): events into
    the run folder as they happen; synced to disk at each checkpoint, closed at the end. A
    failure to write events (a full disk) never stops training: the writer warns once through
    ``warn`` and stops, and ``genwb export tensorboard`` writes them again from the run folder."""

    def __init__(self, run_dir: str | Path, warn: Callable[[str], None] = lambda message: None):
        self.run_dir = Path(run_dir)
        self.warn = warn
        self.file: EventFile | None = None
        self.stopped = False

    def __call__(self, event) -> None:
        if self.stopped:
            return
        try:
            self._handle(event)
        except Exception as e:  # noqa: BLE001 -- events are a copy of the run folder: never fail training for them
            self.stopped = True
            self.close()
            detail = os_error_text(e) if isinstance(e, OSError) else f"{type(e).__name__}: {e}"
            self.warn(f"TensorBoard events stopped at step {getattr(event, 'step', '?')} ({detail}); "
                      f"genwb export tensorboard {self.run_dir} writes them again")

    def _handle(self, event) -> None:
        if isinstance(event, ev.Started):
            # a resumed run repeats everything after its checkpoint: TensorBoard drops the earlier
            # session's events from there on (a fresh run has none, so step 0 costs nothing)
            first = event.step + 1 if event.step else 0
            self.file = EventFile(self.run_dir, purge_step=first)
            self.file.config(first, runlog.read_config(self.run_dir), (self.run_dir / "config.toml").read_text())
        elif self.file is None:
            return
        elif isinstance(event, ev.Step):
            row = {"split": "train", "epoch": event.epoch, **event.metrics, "lr": event.lr, "images_per_s": event.images_per_s}
            self.file.scalars(event.step, runlog.row_scalars(row))
        elif isinstance(event, ev.Evaluated) and event.split == "val":  # the test's figures come with the finals
            self.file.scalars(event.step, runlog.row_scalars({"split": "val", **event.metrics}))
        elif isinstance(event, ev.Samples):
            self.file.image(event.step, event.kind, event.path)
        elif isinstance(event, ev.Checkpointed):
            self.file.sync()
        elif isinstance(event, (ev.Finished, ev.Failed)):
            if isinstance(event, ev.Finished) and event.reason != "cancelled":
                self.file.finals(event.step, self.run_dir)
            self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


# -- genwb export tensorboard -----------------------------------------------------------------------
def export_run(run_dir: str | Path, logdir: str | Path) -> dict[str, Any]:
    """Write the events of a run folder into ``logdir`` (the run folder itself, or a folder of
    its own) in a new event file, then delete the event files that were there before, so an
    export can be repeated (after ``genwb eval``, say) without showing anything twice. Returns
    what was written."""
    run_dir, logdir = runlog.check_run_folder(run_dir), Path(logdir)
    if logdir.resolve() == run_dir.resolve():  # a write into the run folder: under its writer lease
        from workbench.runs import writing

        with writing(run_dir, "exported", "genwb export tensorboard", advice="export it with --out DIR, or once it has stopped"):
            return _export(run_dir, logdir)
    return _export(run_dir, logdir)


def _export(run_dir: Path, logdir: Path) -> dict[str, Any]:
    config = runlog.read_config(run_dir)
    status = read_json(run_dir / "status.json") or {}
    before = set(logdir.glob(_EVENT_FILES)) if logdir.is_dir() else set()
    rows = runlog.read_rows(run_dir)
    logged, images = runlog.logged_rows(rows), runlog.sample_images(run_dir)
    try:
        file = EventFile(logdir, purge_step=0)
        try:
            file.config(0, config, (run_dir / "config.toml").read_text())
            items = [(row.step, 0, row) for row in logged] + [(step, 1, (tag, path)) for step, tag, path in images]
            for step, is_image, item in sorted(items, key=lambda i: i[:2]):  # a step's rows, then its images
                if is_image:
                    file.image(step, *item)
                else:
                    file.scalars(step, item.scalars, item.time)
            if status.get("state") in ("finished", "early-stopped"):
                file.finals(runlog.last_step(run_dir, rows), run_dir)
            file.sync()
        finally:
            file.close()
    except OSError as e:
        raise UserError(f"{logdir}: cannot write TensorBoard events ({os_error_text(e)})", exit_code=1) from None
    for old in before:
        old.unlink(missing_ok=True)
    return {"path": file.path, "scalars": sum(len(r.scalars) for r in logged), "steps": len({r.step for r in logged}),
            "images": len(images), "replaced": len(before)}


def export_runs(run_dirs: list[str | Path], out: str | Path | None = None):
    """Export each run into its own folder, or with ``out`` into ``out/<run folder name>``
    (a second run of the same name gets "-2", ...). Yields (run_dir, what export_run wrote)."""
    require("genwb export tensorboard")
    paths = [runlog.check_run_folder(p) for p in run_dirs]  # every argument checked before anything is written
    taken: set[str] = set()
    for path in paths:
        if out is None:
            yield path, export_run(path, path)
            continue
        name, n = path.resolve().name, 1
        while name in taken:
            n += 1
            name = f"{path.resolve().name}-{n}"
        taken.add(name)
        yield path, export_run(path, Path(out) / name)

