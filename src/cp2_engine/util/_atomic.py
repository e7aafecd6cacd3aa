"""Atomic file writes: a temporary file in the destination folder, flushed to disk and moved
into place with :func:`os.replace`, so a crash never leaves a half-written file.

A write that fails (a full disk included) removes its temporary file and leaves the previous
version of the destination untouched; running out of space raises :class:`DiskFullError`, which
names the file.

Shared by every layer that writes files (io, viz, network, training, zoo, hitl, demo).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DiskFullError", "atomic_write", "atomic_write_file", "give_default_permissions"]

_NO_SPACE = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())


class DiskFullError(OSError):
    """Saving failed for lack of disk space (or quota); the previous file is unchanged.

    An :class:`OSError` with ``errno`` ENOSPC/EDQUOT and ``filename`` set to the destination.
    """


def _explain(err: BaseException, path: Path) -> BaseException:
    """``err`` itself, or a :class:`DiskFullError` naming ``path`` when it means a full disk."""
    if not isinstance(err, OSError) or isinstance(err, DiskFullError):
        return err
    if err.errno not in _NO_SPACE:
        return err
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        err.errno,
        f"disk full while saving {path} ({free}): nothing was replaced, the previous version "
        "(if any) is unchanged and the partial temporary file was removed; free some space "
        "and save again",
        str(path),
    )


def _fsync_path(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()


def give_default_permissions(path) -> None:
    """Give a file made by :func:`tempfile.mkstemp` (mode 0600) the mode ``open()`` would give.

    Without this, every atomically written result would be readable by its owner only.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> fd, tmp = tempfile.mkstemp(); os.close(fd)
    >>> give_default_permissions(tmp)
    >>> oct(pathlib.Path(tmp).stat().st_mode & 0o777) == oct(0o666 & ~_UMASK)
    True
    """
    os.chmod(path, 0o666 & ~_UMASK)


def atomic_write_file(path, write) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path`` (binary), then move it onto ``path``.

    The folder is created if needed; the temp file is removed if ``write`` raises, and a full
    disk raises :class:`DiskFullError` naming ``path`` (whose previous content is unchanged).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = atomic_write_file(p, lambda f: f.write(b"hi"))
    >>> p.read_bytes()
    b'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _explain(err, path) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        give_default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        explained = _explain(err, path)
        if explained is err:
            raise
        raise explained from err
    return path


@contextlib.contextmanager
def atomic_write(path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary file has the same extension as ``path`` (so format-sniffing writers such as
    ``tifffile`` or ``roifile`` behave the same) and is removed if the block raises.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination. Its folder must exist.
    overwrite : bool, optional
        If False, raise :class:`FileExistsError` when ``path`` exists (checked before and
        after writing). Default True.

    Yields
    ------
    pathlib.Path
        Where to write.

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    DiskFullError
        If the disk (or quota) is full; ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_write(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    _refuse_existing(path, overwrite)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist (writing {path.name})")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    except OSError as err:
        raise _explain(err, path) from err
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _refuse_existing(path, overwrite)
        if tmp.is_file():
            _fsync_path(tmp)
        give_default_permissions(tmp)
        os.replace(tmp, path)
    except OSError as err:
        explained = _explain(err, path)
        if explained is err:
            raise
        raise explained from err
    finally:
        tmp.unlink(missing_ok=True)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
