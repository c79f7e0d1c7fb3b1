"""SIGINT, SIGTERM and SIGHUP, handled in one place for ``genwb run`` and ``genwb queue work``.

The first signal asks for a graceful stop (the caller's ``on_stop`` sets its cancel flags: the
current step finishes, a checkpoint is written); the exit code then follows the shell's
convention, 128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP. A second
Ctrl-C aborts at once with KeyboardInterrupt; a second SIGTERM or SIGHUP is ignored, since a stop
is already under way.
"""
from __future__ import annotations

import signal
import threading
from typing import Callable

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


def exit_code(signum: int) -> int:
    return 128 + int(signum)


class StopSignals:
    """``with StopSignals(on_stop) as stop:`` ... ``stop.received`` is the first signal (or None).

    Handlers are installed only in the main thread (Python allows no other), and the previous
    handlers come back on exit."""

    def __init__(self, on_stop: Callable[[int], None]):
        self.on_stop = on_stop
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int | None:
        return None if self.received is None else exit_code(self.received)

    @property
    def name(self) -> str | None:
        return None if self.received is None else NAMES[self.received]

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.received = signum
        self.on_stop(signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
