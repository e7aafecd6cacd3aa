"""Atomic file writes: a temporary file in the destination folder, moved into place with
:func:`os.replace`, so a crash never leaves a half-written file.

Shared by every layer that writes files (io, viz, network, training, zoo, hitl, demo).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_file", "give_default_permissions"]


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

    The folder is created if needed; the temp file is removed if ``write`` raises.

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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        give_default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _refuse_existing(path, overwrite)
        give_default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
