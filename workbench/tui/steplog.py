"""StepLog: a run's log lines in the order they happened, from two sources that arrive out of step.

The metrics rows come from ``metrics.jsonl``, read by a poll every second or half second; the
events (samples, checkpoints, the end) come from the queue at once. Shown as they arrive, a
step's checkpoint line would come before the rows of the steps that led to it. So lines are kept
sorted by step; at one step the rows come first (the Trainer writes a step's row before it emits
that step's events), then the events in the order they arrived.

An event is taken only once a read of the metrics file that started after it arrived has come
back (``take``): the Trainer wrote every row up to the event's step before emitting it, so that
read holds them, and a view that only appends (a RichLog) almost never has to be rewritten.
"""
from __future__ import annotations

import bisect
from typing import Iterable

NOTE, ROW, EVENT = -1, 0, 1  # the order of lines at one step


class StepLog:
    """At most ``maxlen`` lines, by (step, rank, arrival); the lowest steps go first when full."""

    def __init__(self, maxlen: int):
        self.maxlen = maxlen
        self._keys: list[tuple[int, int, int]] = []
        self._lines: list[str] = []
        self._count = 0
        self.event_seq = 0   # the newest event sequence number taken
        self.last_step = 0   # lines without a step (free text from the app) go at the newest step

    def clear(self) -> None:
        self._keys.clear()
        self._lines.clear()
        self.event_seq = 0
        self.last_step = 0

    def lines(self) -> list[str]:
        return list(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, step: int | None, line: str, rank: int = EVENT, trim: bool = True) -> bool:
        """Insert one line; True when it went after every line there was (a view can append it)."""
        if not isinstance(step, int) or isinstance(step, bool):
            step = self.last_step
        key = (step, rank, self._count)
        self._count += 1
        self.last_step = max(self.last_step, step)
        at = bisect.bisect_right(self._keys, key)
        self._keys.insert(at, key)
        self._lines.insert(at, line)
        at_end = at == len(self._keys) - 1
        if trim:
            self._trim()
        return at_end

    def _trim(self) -> None:
        excess = len(self._keys) - self.maxlen
        if excess > 0:  # at once: a first read of thousands of rows would shift the list each time
            del self._keys[:excess], self._lines[:excess]

    def take(self, rows: Iterable[tuple[int, str]], events: Iterable[tuple[int, int | None, str]],
             upto_seq: int | None) -> list[str] | None:
        """Add metrics ``rows`` ((step, line)) and the ``events`` ((seq, step, line)) not taken yet
        with seq <= ``upto_seq`` (None: none of them; the read did not reach the end of the file).
        Returns the lines to append to a view, or None when a line went before lines already shown
        (the view is to be drawn again from ``lines()``)."""
        batch = [(step, ROW, line) for step, line in rows]
        if upto_seq is not None:
            fresh = [(seq, step, line) for seq, step, line in events if self.event_seq < seq <= upto_seq]
            batch += [(step, EVENT, line) for _, step, line in fresh]
            self.event_seq = max([self.event_seq, *(seq for seq, _, _ in fresh)])
        batch.sort(key=lambda item: (item[0] if isinstance(item[0], int) else self.last_step, item[1]))  # stable
        appended: list[str] | None = []
        for step, rank, line in batch:
            if self.add(step, line, rank, trim=False):
                if appended is not None:
                    appended.append(line)
            else:
                appended = None
        self._trim()
        return appended
