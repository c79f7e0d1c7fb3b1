"""Exclusive leases on folders: the one process that writes a run folder, the one process that
works a runs folder's job queue.

    lease = Lease(run_dir, "writer.lock", purpose="trained", label="genwb run")
    if not lease.take():
        raise Busy(run_dir, holder(run_dir, "writer.lock"))
    ...
    lease.release()

A lease is an exclusive ``flock`` on the folder itself and on its info file (``writer.lock`` in a
run folder, ``queue.lock`` in a runs folder), which says who holds it: pid, host, since, what
for. The OS drops a flock when its process dies, however it dies, so a dead holder's lease is
free at once and a stale lock never needs breaking; deleting the info file frees nothing, since
the folder stays locked. Where the filesystem refuses a flock on a folder (NFS), the info file
alone is locked. The info file is never opened through a symbolic link.

Readers ask ``holder()``, which takes a shared lock for an instant and never creates a file; a
taker retries for a moment, so such a probe never makes it fail. Within one process a lease is
held by one thread: ``Lease.take`` from another thread of the same process fails as it would in
another process (see ``workbench.runs.writing`` for the re-entrant and short-write uses).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import UserError
from workbench.fileio import open_fd

_BLOCKED = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
_UNSUPPORTED = (errno.EBADF, errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP)
_INFO_BYTES = 4096
_held: dict[tuple[int, int], "Lease"] = {}  # the leases this process holds, by the folder's identity
_held_lock = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as its info file says."""
    pid: int | None
    host: str | None
    since: float | None
    purpose: str | None          # "trained", "evaluated", "sampled", "worked"
    label: str | None = None     # what holds it: "genwb run", "job j3", ...
    heartbeat: float | None = None
    here: bool = False           # this process

    def describe(self) -> str:
        """"pid 4242 on gpu-01 since 10:31 (genwb run)"."""
        who = f"pid {self.pid}" if self.pid else "a process"
        if self.here:
            who = f"this process (pid {self.pid})"
        where = f" on {self.host}" if self.host and not self.here else ""
        since = f" since {clock(self.since)}" if self.since else ""
        label = f" ({self.label})" if self.label else ""
        return f"{who}{where}{since}{label}"


def clock(when: float) -> str:
    """10:31 today, else "Dec 03 10:31"."""
    moment = dt.datetime.fromtimestamp(when)
    return moment.strftime("%H:%M" if moment.date() == dt.date.today() else "%b %d %H:%M")


class Busy(UserError):
    """A lease another process (or thread) holds: one line that names the holder."""

    def __init__(self, folder, holder: Holder | None, advice: str = "wait for it or stop it first"):
        self.holder = holder
        what = f"being {holder.purpose or 'used'} by {holder.describe()}" if holder else "in use by another process"
        super().__init__(f"{folder}: {what}; {advice}")


def _identity(folder: Path) -> tuple[int, int]:
    st = os.stat(folder)
    return st.st_dev, st.st_ino


def _flock(fd: int, how: int) -> bool | None:
    """True if locked, False if another holds it, None if this filesystem cannot lock it."""
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in _BLOCKED:
            return False
        if e.errno in _UNSUPPORTED:
            return None
        raise


class Lease:
    """The lease on ``folder``, its holder described in ``folder / info_name``."""

    def __init__(self, folder: str | os.PathLike, info_name: str, purpose: str, label: str | None = None):
        self.folder, self.info_name = Path(folder), info_name
        self.purpose, self.label = purpose, label
        self.since = 0.0
        self.owner_thread: int | None = None
        self._fds: list[int] = []
        self._key: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        return bool(self._fds)

    @property
    def info_path(self) -> Path:
        return self.folder / self.info_name

    def take(self, patience: float = 0.25) -> bool:
        """Take the lease unless a live process (or another thread here) holds it. ``patience``:
        how long to retry, so that another process's instant probe never makes this fail."""
        if self.held:
            return True
        key = _identity(self.folder)
        deadline = time.monotonic() + patience
        while True:
            with _held_lock:
                if key in _held:
                    return False
                fds = self._try_lock()
                if fds:
                    self._fds, self._key = fds, key
                    self.since, self.owner_thread = time.time(), threading.get_ident()
                    _held[key] = self
                    break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        try:
            self.beat()
        except OSError:
            self.release()
            raise
        return True

    def _try_lock(self) -> list[int]:
        """[folder fd, info fd] (or [info fd] where folders cannot be locked), or [] if held."""
        fds: list[int] = []
        try:
            folder_fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
            fds.append(folder_fd)
            locked = _flock(folder_fd, fcntl.LOCK_EX)
            if locked is False:
                return self._close(fds)
            if locked is None:
                fds.remove(folder_fd)
                os.close(folder_fd)
            try:
                info_fd = open_fd(self.info_path, os.O_RDWR | os.O_CREAT)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise UserError(f"{self.info_path} is a symbolic link; genwb never writes through one: "
                                    f"remove it, then try again") from None
                raise
            fds.append(info_fd)
            if not _flock(info_fd, fcntl.LOCK_EX):
                return self._close(fds)
            if os.fstat(info_fd).st_ino != os.lstat(self.info_path).st_ino:  # replaced meanwhile
                return self._close(fds)
            return fds
        except BaseException:
            self._close(fds)
            raise

    @staticmethod
    def _close(fds: list[int]) -> list[int]:
        for fd in fds:
            os.close(fd)  # closing drops the flock
        return []

    def info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "since": self.since, "purpose": self.purpose,
                "label": self.label, "heartbeat": time.time()}

    def beat(self) -> None:
        """Rewrite the info file (with a fresh heartbeat) in place, in one write."""
        if not self._fds:
            return
        fd = self._fds[-1]
        data = json.dumps(self.info()).encode()[:_INFO_BYTES]
        os.pwrite(fd, data.ljust(max(len(data), os.fstat(fd).st_size)), 0)
        os.ftruncate(fd, len(data))

    def release(self) -> None:
        with _held_lock:
            if self._key is not None and _held.get(self._key) is self:
                del _held[self._key]
            self._close(self._fds)
            self._fds, self._key, self.owner_thread = [], None, None

    def current_folder(self) -> Path | None:
        """Where the locked folder is now (it may have been renamed since it was taken), where the
        system can tell (Linux's /proc); None otherwise."""
        if not self._fds:
            return None
        try:
            return Path(os.readlink(f"/proc/self/fd/{self._fds[0]}")).parent if len(self._fds) == 1 \
                else Path(os.readlink(f"/proc/self/fd/{self._fds[0]}"))
        except OSError:
            return None

    def holder(self) -> Holder:
        return Holder(os.getpid(), socket.gethostname(), self.since, self.purpose, self.label, time.time(), here=True)

    def __enter__(self) -> "Lease":
        if not self.take():
            raise Busy(self.folder, holder(self.folder, self.info_name))
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def held_here(folder: str | os.PathLike) -> Lease | None:
    """The lease this process holds on ``folder``, if any."""
    try:
        key = _identity(Path(folder))
    except OSError:
        return None
    with _held_lock:
        return _held.get(key)


def holder(folder: str | os.PathLike, info_name: str) -> Holder | None:
    """Who holds the lease on ``folder`` (this process included), or None if it is free. Never
    blocks, never creates a file, never takes the lease for longer than an instant."""
    folder = Path(folder)
    mine = held_here(folder)
    if mine is not None:
        return mine.holder()
    busy = False
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            busy = _flock(fd, fcntl.LOCK_SH) is False
        finally:
            os.close(fd)
    path = folder / info_name
    if not busy:
        try:
            fd = open_fd(path, os.O_RDONLY)
        except OSError:
            return None  # no info file: nobody ever held it here (or it is a link, which no holder uses)
        try:
            busy = _flock(fd, fcntl.LOCK_SH) is False
        finally:
            os.close(fd)
    if not busy:
        return None
    info: dict = {}
    for _ in range(5):  # the holder may be caught rewriting it
        with contextlib.suppress(OSError, ValueError):
            fd = open_fd(path, os.O_RDONLY)
            with os.fdopen(fd, "rb") as f:
                value = json.loads(f.read(_INFO_BYTES))
            if isinstance(value, dict):
                info = value
                break
        time.sleep(0.005)

    def typed(key, kind):
        value = info.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    return Holder(typed("pid", int), typed("host", str), typed("since", (int, float)), typed("purpose", str),
                  typed("label", str), typed("heartbeat", (int, float)))
