"""Bounded, evenly thinned records of an unbounded stream, so memory stays flat however long a
run logs, and a redraw costs the same after a million steps as after a hundred. The queue keeps
each job's metrics rows in a ``History``; the app's curves keep (step, value) points in
``runindex.Series``; both are ``Thinned`` underneath."""
from __future__ import annotations

from typing import Any, Generic, TypeVar

T = TypeVar("T")

HISTORY_ROWS = 2000    # per split and job; older rows are thinned out, never the whole curve


class Thinned(Generic[T]):
    """At most ``capacity`` items of a stream, evenly spread: when full, every other kept item is
    dropped and from then on one item in ``stride`` is kept (the adds numbered 0, stride,
    2·stride, ...). ``latest`` is the newest item, whether it was kept or not."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.kept: list[T] = []
        self.stride = 1
        self.count = 0
        self.latest: T | None = None

    def add(self, item: T) -> None:
        if self.count % self.stride == 0:
            self.kept.append(item)
            if len(self.kept) > self.capacity:
                self.kept = self.kept[::2]
                self.stride *= 2
        self.count += 1
        self.latest = item

    def items(self) -> list[T]:
        """The kept items, and the newest one even when thinning skipped it."""
        if self.latest is not None and (not self.kept or self.kept[-1] is not self.latest):
            return self.kept + [self.latest]
        return list(self.kept)

    def __len__(self) -> int:
        return len(self.kept)


class History:
    """A job's metrics rows (train and val, as in metrics.jsonl), bounded in memory."""

    def __init__(self, capacity: int = HISTORY_ROWS):
        self.train: Thinned[dict[str, Any]] = Thinned(capacity)
        self.val: Thinned[dict[str, Any]] = Thinned(capacity)

    def add(self, row: dict[str, Any]) -> None:
        (self.val if row.get("split") == "val" else self.train).add(row)

    def rows(self) -> list[dict[str, Any]]:
        return sorted(self.train.items() + self.val.items(), key=lambda r: (r.get("step", 0), r.get("split") == "val"))
