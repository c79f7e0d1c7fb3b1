"""File primitives for the run folders and the queue: atomic replacement, reads and appends that
never follow a symbolic link, an exclusive flock as a mutex, and cheap reads of a JSON-lines tail.

State files (queue.json, status.json, eval.json, checkpoints, the lease files) are only ever
replaced whole: written to a unique temporary file, flushed, fsynced and renamed, so a crash
leaves the old file or the new one and a failed write (a full disk) leaves no temporary file.
None of them is opened through a symbolic link: a link planted in their place is replaced by the
rename, never written through, and reading one is refused (ELOOP).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Iterator

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def open_fd(path: Path | str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link as the last component (ELOOP)."""
    return os.open(path, flags | NOFOLLOW | _CLOEXEC, mode)


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (a fresh open file, so threads of one process exclude each other too)."""
    fd = open_fd(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write, flush, fsync (unless ``durable`` is false), rename: a crash leaves the old file or the
    new one, and a failed write (e.g. on a full disk) leaves no temporary file. The temporary name
    is unique per thread and made with O_EXCL, so nothing planted there is written through."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left by a crash of this very thread id, long ago
        fd = open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), durable)


def read_bytes(path: Path | str, limit: int | None = None) -> bytes:
    """The file's bytes (at most ``limit``), refusing a symbolic link (OSError ELOOP)."""
    fd = open_fd(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        return f.read() if limit is None else f.read(limit)


def read_text(path: Path | str, limit: int | None = None) -> str:
    return read_bytes(path, limit).decode()


def append_bytes(path: Path | str, data: bytes) -> None:
    """Append ``data`` in one write; on failure the file is cut back to its old size (no half row)."""
    fd = open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with os.fdopen(fd, "ab") as f:
        size = f.seek(0, os.SEEK_END)
        try:
            f.write(data)
            f.flush()
        except OSError:
            f.truncate(size)
            raise


def read_json(path: Path, limit: int = 1 << 20) -> dict | None:
    """A JSON object from ``path`` (at most ``limit`` bytes of it); None when missing, a link,
    being replaced, too deep, or not an object."""
    try:
        value = json.loads(read_bytes(path, limit))
    except (OSError, ValueError, RecursionError):  # ValueError: bad JSON or bad UTF-8
        return None
    return value if isinstance(value, dict) else None


def tail_rows(path: Path, size: int = 8192) -> list[dict]:
    """The last complete JSON lines of a metrics file (cheap on a long file)."""
    try:
        fd = open_fd(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - size))
            lines = f.read(size).decode(errors="replace").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines[1:] if end > size else lines:
        with contextlib.suppress(ValueError, RecursionError):
            row = json.loads(line)
            if isinstance(row, dict):
                rows.append(row)
    return rows
