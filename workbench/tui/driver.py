"""The app's terminal driver: Textual's LinuxDriver, made to survive its terminal going away.

Why: when the terminal closes (SSH dropped, ``tmux kill-session``), writes to it fail with EIO
(or EPIPE, EBADF). Textual's WriterThread does not catch that: the thread dies on its first failed
write, and its queue is bounded (30 writes), so the 31st ``driver.write`` -- the redraws still
coming, then the escape codes of ``stop_application_mode`` -- blocks the event loop forever in
``Queue.put``, and ``WriterThread.stop`` (``put(None)``, ``join``) never returns. The process
hung in its shutdown, holding the memory of its models.

Here the writer thread catches the failure, marks the terminal gone and keeps draining its queue
without writing, so no ``put`` can block; the dead terminal's file descriptors are pointed at
/dev/null, so that the rest of the exit (Textual's last escape codes, Python's flush of stdout at
exit, a traceback) cannot fail or block either; and the app is told (``TerminalGone``), which
leaves like a hang-up: running jobs checkpoint, then the app exits.
"""
from __future__ import annotations

import contextlib
import os
import threading

from textual.drivers._writer_thread import WriterThread
from textual.drivers.linux_driver import LinuxDriver
from textual.message import Message


class TerminalGone(Message):
    """Posted to the app (from the driver's threads) when its terminal cannot be written or read."""


def silence_terminal_fds(fds) -> None:
    """Point each of ``fds`` at /dev/null: later writes to them succeed and go nowhere."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for fd in sorted(set(fds)):
                with contextlib.suppress(OSError):
                    os.dup2(null, fd)
        finally:
            os.close(null)


class SafeWriterThread(WriterThread):
    """A WriterThread that outlives a failed write: it drops the rest instead of dying."""

    def __init__(self, file, on_gone) -> None:
        super().__init__(file)
        self.gone = threading.Event()
        self._on_gone = on_gone

    def write(self, text: str) -> None:
        if not self.gone.is_set():
            self._queue.put(text)

    def run(self) -> None:
        get, qsize = self._queue.get, self._queue.qsize
        while True:
            text = get()
            if text is None:
                break
            if self.gone.is_set():
                continue  # keep draining: a writer blocked in put() would hang the app
            try:
                self._file.write(text)
                if qsize() == 0:
                    self._file.flush()
            except (OSError, ValueError):  # EIO / EPIPE / EBADF, or a file closed under us
                self.gone.set()
                self._on_gone()
        if not self.gone.is_set():
            with contextlib.suppress(OSError, ValueError):
                self._file.flush()


class GenwbDriver(LinuxDriver):
    """LinuxDriver whose writes and reads stop, instead of hanging or panicking, once the terminal is gone."""

    _gone_lock = threading.Lock()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.terminal_gone = False

    def _terminal_gone(self) -> None:
        with self._gone_lock:
            if self.terminal_gone:
                return
            self.terminal_gone = True
        fds = [0, 1, 2]
        with contextlib.suppress(Exception):
            fds.append(self._file.fileno())
        # The output is redirected first: any writer still running now writes to /dev/null.
        silence_terminal_fds(fds)
        self.exit_event.set()  # the input thread stops reading the dead terminal
        self._app.post_message(TerminalGone())

    def start_application_mode(self) -> None:
        super().start_application_mode()
        # Swap Textual's writer for one that survives the terminal (nothing was queued yet that
        # the old one would lose: it is stopped, which flushes what it had).
        old = self._writer_thread
        self._writer_thread = SafeWriterThread(self._file, self._terminal_gone)
        self._writer_thread.start()
        if old is not None:
            old.stop()

    def write(self, data: str) -> None:
        if not self.terminal_gone:
            super().write(data)

    def flush(self) -> None:
        if not self.terminal_gone:
            super().flush()

    def _run_input_thread(self) -> None:
        try:
            self.run_input_thread()
        except OSError:  # EIO reading a hung-up terminal: not a crash to show on it
            self._terminal_gone()
        except BaseException:
            if self.terminal_gone:
                return
            import rich.traceback

            self._app.call_later(self._app.panic, rich.traceback.Traceback())  # as LinuxDriver does
