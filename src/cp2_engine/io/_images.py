"""Images: read and write tif/tiff, png, jpg, npy and zarr.

Every writer is atomic (:func:`cp2_engine.util.atomic_write`): a crash never leaves a
half-written file.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from cp2_engine.util import atomic_write

logger = logging.getLogger(__name__)

#: Extensions :func:`imread` understands (lower case).
IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".zarr")
#: zarr arrays above this many bytes are returned lazily by ``imread(..., lazy=None)``.
_LAZY_BYTES = 512 * 2**20

__all__ = ["IMAGE_EXTENSIONS", "imread", "imwrite", "open_zarr_array"]


def _suffix(path: Path) -> str:
    """Full extension used to pick a format: ``.tif``, ``.png``, ``_seg.npy`` -> ``.npy``."""
    return path.suffix.lower()


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")


def _check_path(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    ext = _suffix(path)
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"unsupported file type {ext!r} for {path}; expected {IMAGE_EXTENSIONS}")
    return path


def open_zarr_array(path):
    """Open a zarr array, or the first multiscale level of an (OME-)zarr group (else the group's
    first array by name), without reading it.

    Examples
    --------
    >>> import tempfile, zarr
    >>> folder = Path(tempfile.mkdtemp()) / "a.zarr"
    >>> _ = zarr.create_array(str(folder), shape=(4, 6), dtype="uint8")
    >>> open_zarr_array(folder)[1:3, :2].shape
    (2, 2)
    """
    import zarr

    path = Path(path)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a folder that is not zarr
        raise ValueError(f"{path} is not a readable zarr array or group: {err}") from err
    if isinstance(node, zarr.Array):
        return node
    multiscales = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return node[multiscales[0]["datasets"][0]["path"]]
    names = sorted(name for name, _ in node.arrays())
    if not names:
        raise ValueError(f"zarr group {path} holds no array")
    logger.info("reading array %r of zarr group %s", names[0], path)
    return node[names[0]]


def imread(path, *, lazy: bool | None = False):
    """Read an image or label image from tif/tiff, png, jpg, npy or zarr.

    Arrays come back as stored: ``(H, W)`` or ``(H, W, C)`` for tif/png/jpg.

    Parameters
    ----------
    path : str or os.PathLike
        File (or ``.zarr`` folder) to read.
    lazy : bool or None, optional
        For zarr only: True returns the ``zarr.Array`` itself, False (default) a numpy
        array, None a numpy array unless the array is larger than 512 MiB.

    Returns
    -------
    numpy.ndarray or zarr.Array

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For an unknown extension, or a pickled ``.npy`` (use :func:`load_seg_npy`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.tif"
    >>> imwrite(p, np.eye(3, dtype=np.uint8))
    >>> imread(p).sum()
    np.uint64(3)
    """
    path = _check_path(path)
    ext = _suffix(path)
    if ext in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    if ext == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(
                f"{path} holds pickled objects (a Cellpose _seg.npy?); read it with "
                "load_seg_npy(path) or read_labels(path)"
            ) from err
    if ext == ".zarr":
        arr = open_zarr_array(path)
        if lazy or (lazy is None and arr.nbytes > _LAZY_BYTES):
            return arr
        return np.asarray(arr[...])
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def imwrite(path, arr, *, overwrite: bool = True) -> None:
    """Write an array atomically as tif/tiff (zlib), png, jpg, npy or zarr.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; the extension picks the format.
    arr : array_like
        Image to write. png takes uint8/uint16 ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``.
    overwrite : bool, optional
        Replace an existing file. Default True (use :func:`save_masks` for annotations).

    Raises
    ------
    ValueError
        For an unknown extension or a dtype the format cannot hold.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.png"
    >>> imwrite(p, np.full((4, 4), 7, np.uint16))
    >>> imread(p).max()
    np.uint16(7)
    """
    path = Path(path)
    arr = np.asarray(arr)
    ext = _suffix(path)
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"unsupported file type {ext!r} for {path}; expected {IMAGE_EXTENSIONS}")
    if ext == ".zarr":
        _write_zarr(path, arr, overwrite=overwrite)
        return
    if ext in (".png", ".jpg", ".jpeg") and arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{ext} files hold uint8 or uint16 images, got {arr.dtype}; use .tif")
    with atomic_write(path, overwrite=overwrite) as tmp:
        if ext in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, arr, compression="zlib")
        elif ext == ".npy":
            np.save(tmp, arr, allow_pickle=False)
        else:
            import imageio.v3 as iio

            iio.imwrite(tmp, arr, extension=ext)


def _write_zarr(path: Path, arr: np.ndarray, *, overwrite: bool) -> None:
    import zarr

    _refuse_existing(path, overwrite)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".zarr"))
    old = None
    try:
        zarr.save_array(str(tmp), arr)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
