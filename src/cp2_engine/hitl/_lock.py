"""One writer at a time: the ``project.lock`` file of a HITL project.

Every operation that writes a project (create, accept, set_prediction, a retraining round from
its first step to its registration) holds ``<project>/project.lock`` for its duration. The file
records the writer's pid, host, command and start time. Another process that tries to write
meanwhile gets :class:`ProjectLockedError`, which names that process; reading is always allowed
(every file is replaced atomically). A lock left by a process that died (same host, pid gone) is
stale and is taken over. Within one process the lock is re-entrant (several ``HitlProject``
objects, threads, nested operations), and each outermost acquisition re-reads ``project.json``
so a project object never writes from a view older than another process's last round.

The lock file appears atomically (written under a temporary name, then hard-linked onto
``project.lock``), so a reader never sees a half-written lock.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "ProjectLockedError"]

#: Name of the lock file in a project folder.
LOCK_NAME = "project.lock"

_HELD: dict[str, int] = {}  # lock path -> depth of this process's nested acquisitions
_HELD_GUARD = threading.Lock()
_STALE_BREAKER_SECONDS = 30.0


class ProjectLockedError(RuntimeError):
    """Another process is writing the project; the message names it (pid, host, command)."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        try:
            import psutil
        except ImportError:
            return True  # cannot tell: never take over a lock that may be live
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _record() -> str:
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command[:200],
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    return json.dumps(info)


def _create(lock: Path, text: str) -> bool:
    """Create ``lock`` holding ``text`` atomically; False when it exists."""
    fd, tmp = tempfile.mkstemp(dir=lock.parent, prefix=f".{lock.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        try:
            os.link(tmp, lock)
            return True
        except FileExistsError:
            return False
        except OSError as err:  # no hard links here (some network/FAT file systems)
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _holder(lock: Path) -> tuple[str, dict] | None:
    """The lock's text and parsed content; None when it vanished."""
    try:
        text = lock.read_text()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
        info = info if isinstance(info, dict) else {}
    except json.JSONDecodeError:
        info = {}
    return text, info


def _is_stale(lock: Path, info: dict) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int):  # unreadable: a crash mid-write on a link-less file system
        return time.time() - lock.stat().st_mtime > _STALE_BREAKER_SECONDS
    if info.get("host") != socket.gethostname():
        return False  # a process on another machine: we cannot tell, so it is live
    return not _pid_alive(pid)


def _break(lock: Path, seen: str) -> None:
    """Remove a stale lock, unless another process replaced it meanwhile."""
    breaker = lock.with_name(lock.name + ".break")
    try:
        fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - breaker.stat().st_mtime > _STALE_BREAKER_SECONDS:
                breaker.unlink()
        return
    try:
        current = _holder(lock)
        if current is not None and current[0] == seen:
            lock.unlink()
            logger.warning("took over the stale lock %s (%s)", lock, seen)
    finally:
        os.close(fd)
        breaker.unlink(missing_ok=True)


def _locked_message(folder: Path, lock: Path, info: dict) -> str:
    who = (
        f"process {info.get('pid', '?')} on host {info.get('host', '?')} "
        f"({info.get('command', '?')}, since {info.get('since', '?')})"
    )
    return (
        f"the HITL project {folder} is being written by another {who}; wait until it has "
        f"finished (or close the project there) and try again. If that process no longer "
        f"exists, delete {lock}"
    )


def _acquire(folder: Path, lock: Path) -> None:
    text = _record()
    for _ in range(100):
        if _create(lock, text):
            return
        seen = _holder(lock)
        if seen is None:
            continue
        info = seen[1]
        if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            return  # ours (an earlier acquisition of this process)
        if not _is_stale(lock, info):
            raise ProjectLockedError(_locked_message(folder, lock, info))
        _break(lock, seen[0])
        time.sleep(0.01)
    raise ProjectLockedError(f"could not take the lock {lock} (it keeps changing)")


def _release(lock: Path) -> None:
    seen = _holder(lock)
    if seen is not None and seen[1].get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def project_lock(folder: Path) -> Iterator[bool]:
    """Hold ``folder/project.lock``; yields True for this process's outermost acquisition.

    Raises
    ------
    ProjectLockedError
        Another live process holds the lock.
    """
    folder = Path(folder)
    lock = folder / LOCK_NAME
    key = os.path.realpath(lock)
    with _HELD_GUARD:
        outer = _HELD.get(key, 0) == 0
        if outer:
            _acquire(folder, lock)
        _HELD[key] = _HELD.get(key, 0) + 1
    try:
        yield outer
    finally:
        with _HELD_GUARD:
            _HELD[key] -= 1
            if _HELD[key] == 0:
                del _HELD[key]
                _release(lock)


class WriterLockMixin:
    """``HitlProject``'s side of the lock: ``_writing()`` and a re-read of ``project.json``."""

    folder: Path
    _meta: dict

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        with project_lock(self.folder) as outer:
            if outer:
                self._reload_meta()
            yield

    def _reload_meta(self) -> None:
        path = self.folder / "project.json"
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # not created yet, or unreadable: keep the view we have
        if isinstance(meta, dict) and meta != self._meta:
            logger.info("project %s changed on disk; re-read project.json", self.folder)
            self._meta = meta
            if hasattr(self, "_model_cache"):
                self._model_cache = None


def writes(method):
    """Decorate a ``HitlProject`` method (or generator method) to hold the lock while it runs."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self, *args, **kwargs):
            with self._writing():
                return (yield from method(self, *args, **kwargs))

        return generator

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._writing():
            return method(self, *args, **kwargs)

    return call
