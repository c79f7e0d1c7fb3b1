"""The job queue's files: an exclusive flock as a mutex, atomic writes, reading queue.json
without trusting it, cheap reads of a metrics file's tail, and the owner's lease.

The lease is an exclusive ``flock`` on ``runs_dir/queue.lock`` held for the owner's lifetime:
the OS drops it when the process dies, however it dies, so a stale lock never needs breaking.
The file also says who holds it (pid, host, since, heartbeat) for ``genwb queue list``.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

from workbench.errors import UserError


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (a fresh open file, so threads of one process exclude each other too)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write, flush, fsync, rename: a crash leaves the old file or the new one, and a failed write
    (e.g. on a full disk) leaves no temporary file. The temporary name is unique per thread."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def tail_rows(path: Path, size: int = 8192) -> list[dict]:
    """The last complete JSON lines of a metrics file (cheap on a long file)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(0, end - size))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines[1:] if end > size else lines:
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``; None when missing, being replaced, or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):  # ValueError: bad JSON or bad UTF-8
        return None
    return value if isinstance(value, dict) else None


def read_queue(path: Path) -> dict:
    """queue.json's content ({} if there is none yet); UserError if it is not a queue file, so that
    nobody overwrites a damaged queue with an empty one."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable queue file ({type(e).__name__}); move it aside to start an empty queue") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs", []), list):
        raise UserError(f"{path}: not a queue file (no list of jobs); move it aside to start an empty queue")
    return data


class Lease:
    """Ownership of a runs folder's queue, for as long as this object holds it."""

    def __init__(self, path: Path):
        self.path, self.fd, self.since = Path(path), None, 0.0

    @property
    def held(self) -> bool:
        return self.fd is not None

    def take(self) -> bool:
        """Take the lease if no live process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        self.fd, self.since = fd, time.time()
        self.beat()
        return True

    def info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "since": self.since, "heartbeat": time.time()}

    def beat(self) -> None:
        if self.fd is not None:
            data = json.dumps(self.info()).encode()
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def lease_holder(path: Path) -> dict | None:
    """pid, host, since and heartbeat of the live process holding the lease at ``path``, else None."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            for _ in range(5):  # the holder rewrites it now and then: try again if caught half-written
                info = read_json(path)
                if info:
                    return info
                time.sleep(0.01)
            return {"pid": None, "host": None}
        return None
    finally:
        os.close(fd)
