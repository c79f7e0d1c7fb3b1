"""The messages the app and its screens share: queue events posted from worker threads, and the
coalesced snapshot of the queue the screens redraw from."""
from __future__ import annotations

from textual.message import Message

TAIL_BYTES = 256_000  # how much of a long metrics file the sparkline and the log start from


class QueueEvent(Message):
    """A queue event, posted from a worker thread."""

    def __init__(self, job_id: str, event) -> None:
        super().__init__()
        self.job_id = job_id
        self.event = event


class JobsUpdated(Message):
    """Sent to the screens after each snapshot: ``jobs`` in queue order, ``changed`` job ids."""

    bubble = False

    def __init__(self, jobs: list, changed: set[str]) -> None:
        super().__init__()
        self.jobs = jobs
        self.changed = changed
