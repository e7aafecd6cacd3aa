"""Reading and writing images, label images and Cellpose-compatible segmentation files.

Every writer is atomic: it writes a temporary file in the destination folder and moves it into
place with :func:`os.replace`, so a crash never leaves a half-written file. Writers of
annotations (:func:`save_masks`, :func:`save_seg_npy`, :func:`save_imagej_rois`) refuse to
replace an existing file unless ``overwrite=True``.

This module has no GUI knowledge; it never imports napari or Qt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Extensions :func:`imread` understands (lower case).
IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".zarr")
#: Suffixes (before the extension) of label files, most preferred first.
LABEL_SUFFIXES = ("_masks", "_cp_masks", "_seg")
#: Suffixes of derived files that are never images to segment.
_DERIVED_SUFFIXES = (
    *LABEL_SUFFIXES,
    "_flows",
    "_outlines",
    "_cp_output",
    "_overlay",
    "_cp_overlay",
    "_rois",
)
#: zarr arrays above this many bytes are returned lazily by ``imread(..., lazy=None)``.
_LAZY_BYTES = 512 * 2**20

__all__ = [
    "IMAGE_EXTENSIONS",
    "LABEL_SUFFIXES",
    "atomic_write",
    "find_image_label_pairs",
    "find_label_files",
    "flow_to_rgb",
    "imread",
    "imwrite",
    "load_seg_npy",
    "masks_outlines",
    "overlay_png",
    "read_labels",
    "save_imagej_rois",
    "save_masks",
    "save_seg_npy",
]


# --------------------------------------------------------------------------- atomic files


def _suffix(path: Path) -> str:
    """Full extension used to pick a format: ``.tif``, ``.png``, ``_seg.npy`` -> ``.npy``."""
    return path.suffix.lower()


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

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
    >>> with atomic_write(target) as tmp:
    ...     np.save(tmp, np.arange(3))
    >>> np.load(target).tolist()
    [0, 1, 2]
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


# --------------------------------------------------------------------------- images


def _check_path(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    ext = _suffix(path)
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"unsupported file type {ext!r} for {path}; expected {IMAGE_EXTENSIONS}")
    return path


def _open_zarr_array(path: Path):
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Group):
        names = sorted(name for name, _ in node.arrays())
        if not names:
            raise ValueError(f"zarr group {path} holds no array")
        logger.info("reading array %r of zarr group %s", names[0], path)
        node = node[names[0]]
    return node


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
        arr = _open_zarr_array(path)
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


# --------------------------------------------------------------------------- masks


def _label_dtype(masks: np.ndarray, name: str = "masks") -> np.ndarray:
    masks = np.asarray(masks)
    if not np.issubdtype(masks.dtype, np.integer):
        raise TypeError(f"{name} must be an integer label image, got dtype {masks.dtype}")
    if masks.size and masks.min() < 0:
        raise ValueError(f"{name} has negative labels; expected 0 = background, 1..N = masks")
    top = int(masks.max()) if masks.size else 0
    if top > np.iinfo(np.uint32).max:
        raise ValueError(f"{name} has labels above 2**32 - 1 ({top}); renumber them first")
    return masks.astype(np.uint16 if top <= 65535 else np.uint32, copy=False)


def save_masks(path, masks, *, overwrite: bool = False) -> Path:
    """Save a label image as ``.tif``/``.tiff`` (zlib) or ``.png``, refusing to overwrite.

    Labels are stored as uint16, or uint32 when a label exceeds 65535 (tif only).

    Parameters
    ----------
    path : str or os.PathLike
        Destination, typically ``<name>_masks.tif`` or ``<name>_cp_masks.png``.
    masks : numpy.ndarray
        Integer label image, 0 = background.
    overwrite : bool, optional
        Replace an existing file. Default False: annotations are never silently replaced.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    ValueError
        For negative labels, labels above 65535 in a png, or an extension other than
        tif/tiff/png.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "cells_masks.tif"
    >>> _ = save_masks(p, np.array([[0, 1], [2, 2]]))
    >>> imread(p).dtype
    dtype('uint16')
    """
    path = Path(path)
    ext = _suffix(path)
    if ext not in (".tif", ".tiff", ".png"):
        raise ValueError(f"masks are saved as .tif, .tiff or .png, got {path.name!r}")
    masks = _label_dtype(masks)
    if ext == ".png" and masks.dtype == np.uint32:
        raise ValueError(f"{path.name}: more than 65535 labels do not fit a png; use .tif")
    imwrite(path, masks, overwrite=overwrite)
    return path


def read_labels(path) -> np.ndarray:
    """Read a label image from a masks file (tif/png/npy/zarr) or a ``_seg.npy``.

    Parameters
    ----------
    path : str or os.PathLike
        ``<name>_masks.tif``, ``<name>_cp_masks.png``, ``<name>_seg.npy``, ...

    Returns
    -------
    numpy.ndarray
        Integer label image (2D labels saved with a singleton axis are squeezed).

    Raises
    ------
    TypeError
        If the file holds a non-integer array.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a_masks.png"
    >>> _ = save_masks(p, np.array([[0, 3]]))
    >>> read_labels(p).tolist()
    [[0, 3]]
    """
    path = Path(path)
    if path.name.endswith("_seg.npy"):
        labels = np.asarray(load_seg_npy(path)["masks"])
    else:
        labels = np.asarray(imread(path))
    if labels.ndim > 2:
        labels = labels.squeeze()
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{path} does not hold integer labels (dtype {labels.dtype})")
    return labels


def masks_outlines(masks) -> np.ndarray:
    """Label image of the inner boundary pixels of each mask (Cellpose ``outlines`` key).

    Examples
    --------
    >>> m = np.zeros((5, 5), np.uint16)
    >>> m[1:4, 1:4] = 2
    >>> int((masks_outlines(m) == 2).sum())
    8
    """
    from skimage.segmentation import find_boundaries

    masks = np.asarray(masks)
    return np.where(find_boundaries(masks, mode="inner"), masks, 0).astype(masks.dtype)


# --------------------------------------------------------------------------- _seg.npy


def flow_to_rgb(dP) -> np.ndarray:
    """Colour a ``(2, H, W)`` (dY, dX) flow field: hue = direction, brightness = magnitude.

    Examples
    --------
    >>> rgb = flow_to_rgb(np.ones((2, 4, 4), np.float32))
    >>> rgb.shape, rgb.dtype
    ((4, 4, 3), dtype('uint8'))
    """
    from skimage.color import hsv2rgb

    dP = np.asarray(dP, dtype=np.float32)
    if dP.ndim != 3 or dP.shape[0] != 2:
        raise ValueError(f"flows must be (2, H, W) (dY, dX), got shape {dP.shape}")
    mag = np.hypot(dP[0], dP[1])
    hi = np.percentile(mag, 99) if mag.size else 0.0
    value = np.clip(mag / hi, 0, 1) if hi > 0 else np.zeros_like(mag)
    hue = (np.arctan2(dP[0], dP[1]) + np.pi) / (2 * np.pi)
    hsv = np.stack([hue, np.ones_like(hue), value], axis=-1)
    return (hsv2rgb(hsv) * 255).round().astype(np.uint8)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Scale between the 1st and 99th percentile to 0..255."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = np.percentile(x, (1, 99)) if x.size else (0.0, 0.0)
    scaled = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _seg_flows(flows, cellprob, shape) -> list:
    if flows is None and cellprob is None:
        return [[], [], [], [], [[]]]  # the Cellpose GUI's "no flows" value
    if flows is None or cellprob is None:
        raise ValueError("pass both flows (2, H, W) and cellprob (H, W), or neither")
    dP = np.asarray(flows, dtype=np.float32)
    prob = np.asarray(cellprob, dtype=np.float32)
    if dP.shape != (2, *shape) or prob.shape != tuple(shape):
        raise ValueError(
            f"expected flows (2, {shape[0]}, {shape[1]}) and cellprob {tuple(shape)}, got "
            f"{dP.shape} and {prob.shape}"
        )
    rgb = flow_to_rgb(dP)[np.newaxis]
    return [
        rgb,
        _to_uint8(prob)[np.newaxis],
        np.zeros_like(rgb),
        np.zeros((2, *shape), dtype=np.float32),
        np.concatenate([dP, prob[np.newaxis]], axis=0),
    ]


def _consecutive(masks: np.ndarray) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    ids = np.unique(masks)
    n = len(ids) - (1 if ids.size and ids[0] == 0 else 0)
    if masks.size and int(masks.max()) != n:
        logger.info("renumbering masks to 1..%d for the Cellpose GUI", n)
        masks = relabel_sequential(masks)[0]
    return _label_dtype(masks)


def _seg_path(path: Path) -> tuple[Path, str]:
    """(output ``_seg.npy`` path, image file name) for an image or ``_seg.npy`` path."""
    if path.name.endswith("_seg.npy"):
        return path, str(path)[: -len("_seg.npy")]
    return path.with_name(path.stem + "_seg.npy"), str(path)


def save_seg_npy(
    path,
    *,
    image,
    masks,
    flows=None,
    cellprob=None,
    diameter: float | None = None,
    channels: Sequence[int] = (0, 0),
    model_path=None,
    flow_threshold: float = 0.4,
    cellprob_threshold: float = 0.0,
    ismanual=None,
    overwrite: bool = False,
) -> Path:
    """Write a Cellpose-GUI-compatible ``_seg.npy`` (a pickled dict saved with ``np.save``).

    Parameters
    ----------
    path : str or os.PathLike
        The image path (``cells.tif`` writes ``cells_seg.npy`` beside it) or the
        ``_seg.npy`` path itself.
    image : numpy.ndarray
        The image the masks belong to (stored as ``img``).
    masks : numpy.ndarray
        ``(H, W)`` integer labels; renumbered to 1..N if they have gaps (the GUI assumes it).
    flows, cellprob : numpy.ndarray, optional
        Network flows ``(2, H, W)`` (dY, dX) and cell-probability logits ``(H, W)``; both or
        neither. They let the GUI re-threshold without running the network.
    diameter : float, optional
        Diameter used for segmentation; default the median mask diameter.
    channels : sequence of int, optional
        Cellpose ``[chan, chan2]``, stored as ``chan_choose``.
    model_path : str or os.PathLike, optional
        Model used, stored as a string (``""`` when None).
    flow_threshold, cellprob_threshold : float, optional
        Thresholds used, stored for the GUI.
    ismanual : array_like of bool, optional
        One flag per mask (after renumbering): True for hand-drawn masks. Default all False.
    overwrite : bool, optional
        Replace an existing file. Default False.

    Returns
    -------
    pathlib.Path
        The written ``_seg.npy`` path.

    Raises
    ------
    FileExistsError
        If the file exists and ``overwrite`` is False.
    ValueError
        For mismatched shapes or a wrong ``ismanual`` length.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> m = np.zeros((8, 8), np.uint16)
    >>> m[2:5, 2:5] = 1
    >>> out = save_seg_npy(folder / "cells.tif", image=np.zeros((8, 8)), masks=m)
    >>> out.name, sorted(load_seg_npy(out))[:3]
    ('cells_seg.npy', ['cellprob_threshold', 'chan_choose', 'colors'])
    """
    from cp2_engine.metrics import diameters

    out, filename = _seg_path(Path(path))
    masks = _consecutive(np.asarray(masks))
    if masks.ndim != 2:
        raise ValueError(f"masks must be (H, W), got shape {masks.shape}")
    image = np.asarray(image)
    if image.shape[:2] != masks.shape and image.shape[-2:] != masks.shape:
        raise ValueError(f"image shape {image.shape} does not match masks {masks.shape}")
    n = int(masks.max()) if masks.size else 0
    manual = np.zeros(n, dtype=bool) if ismanual is None else np.asarray(ismanual, dtype=bool)
    if manual.shape != (n,):
        raise ValueError(f"ismanual must hold one flag per mask ({n}), got {manual.shape}")
    est_diam = diameters(masks)[0]
    dat = {
        "outlines": masks_outlines(masks),
        "colors": np.random.default_rng(n).integers(64, 256, size=(n, 3), dtype=np.uint8),
        "masks": masks,
        "chan_choose": [int(c) for c in channels],
        "filename": filename,
        "flows": _seg_flows(flows, cellprob, masks.shape),
        "ismanual": manual,
        "manual_changes": [],
        "model_path": "" if model_path is None else str(model_path),
        "flow_threshold": float(flow_threshold),
        "cellprob_threshold": float(cellprob_threshold),
        "diameter": float(est_diam if diameter is None else diameter),
        "est_diam": float(est_diam),
        "img": image,
    }
    with atomic_write(out, overwrite=overwrite) as tmp:
        np.save(tmp, dat, allow_pickle=True)
    return out


def load_seg_npy(path) -> dict:
    """Read a ``_seg.npy`` written by cp2 or the Cellpose GUI/CLI.

    Security: ``_seg.npy`` files are Python pickles, and loading a pickle can run arbitrary
    code. Only open files from sources you trust.

    Parameters
    ----------
    path : str or os.PathLike
        The ``_seg.npy`` file.

    Returns
    -------
    dict
        The stored keys (at least ``masks``).

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If the file does not hold a dict with a ``masks`` entry.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x_seg.npy"
    >>> np.save(p, {"masks": np.ones((2, 2), np.uint16)})
    >>> load_seg_npy(p)["masks"].sum()
    np.uint64(4)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such _seg.npy file: {path}")
    obj = np.load(path, allow_pickle=True)
    dat = obj.item() if obj.dtype == object and obj.shape == () else None
    if not isinstance(dat, dict) or "masks" not in dat:
        raise ValueError(f"{path} is not a Cellpose _seg.npy (expected a dict with 'masks')")
    return dat


# --------------------------------------------------------------------------- ROIs, overlays


def _mask_polygons(masks: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(label, (k, 2) xy polygon)`` for each mask, from its longest contour."""
    from scipy import ndimage
    from skimage.measure import find_contours

    for index, box in enumerate(ndimage.find_objects(masks)):
        if box is None:
            continue
        label = index + 1
        crop = np.pad(masks[box] == label, 1).astype(np.uint8)
        contours = find_contours(crop, 0.5)
        longest = max(contours, key=len)
        y = longest[:, 0] - 1 + box[0].start
        x = longest[:, 1] - 1 + box[1].start
        yield label, np.stack([x, y], axis=1)


def save_imagej_rois(path, masks, *, overwrite: bool = False) -> Path:
    """Save each mask as an ImageJ polygon ROI in a zip (open in Fiji's ROI manager).

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.zip``, e.g. ``<name>_rois.zip``.
    masks : numpy.ndarray
        ``(H, W)`` integer label image.
    overwrite : bool, optional
        Replace an existing file. Default False.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.zip`` or ``masks`` is not 2D.

    Examples
    --------
    >>> import tempfile, pathlib, roifile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a_rois.zip"
    >>> m = np.zeros((9, 9), np.uint16)
    >>> m[1:4, 1:4], m[5:8, 5:8] = 1, 2
    >>> len(roifile.roiread(save_imagej_rois(p, m)))
    2
    """
    import roifile

    path = Path(path)
    if _suffix(path) != ".zip":
        raise ValueError(f"ImageJ ROI sets are .zip files, got {path.name!r}")
    masks = _label_dtype(masks)
    if masks.ndim != 2:
        raise ValueError(f"masks must be (H, W), got shape {masks.shape}")
    rois = []
    for label, xy in _mask_polygons(masks):
        roi = roifile.ImagejRoi.frompoints(xy)
        roi.name = f"{label:05d}"
        rois.append(roi)
    if not rois:
        raise ValueError("masks hold no labels: nothing to write as ROIs")
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.unlink()  # roifile appends to an existing zip
        roifile.roiwrite(tmp, rois)
    return path


def _display_rgb(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (2, 3) and image.shape[1:] == shape:
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 2:
        image = image[..., np.newaxis]
    if image.ndim != 3 or image.shape[:2] != shape:
        raise ValueError(f"image shape {image.shape} does not match masks {shape}")
    channels = [_to_uint8(image[..., c]) for c in range(min(image.shape[-1], 3))]
    while len(channels) < 3:
        channels.append(channels[0] if image.shape[-1] == 1 else np.zeros_like(channels[0]))
    return np.stack(channels, axis=-1)


def overlay_png(path, image, masks, *, color=(255, 0, 0), overwrite: bool = True) -> Path:
    """Save the image (percentile-scaled to 8 bit) as a png with mask outlines drawn on it.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.png``.
    image : numpy.ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` image (first 3 channels shown).
    masks : numpy.ndarray
        ``(H, W)`` integer label image.
    color : tuple of int, optional
        RGB colour of the outlines. Default red.
    overwrite : bool, optional
        Replace an existing file. Default True.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "overlay.png"
    >>> m = np.zeros((6, 6), np.uint16)
    >>> m[1:5, 1:5] = 1
    >>> imread(overlay_png(p, np.ones((6, 6)), m)).shape
    (6, 6, 3)
    """
    path = Path(path)
    if _suffix(path) != ".png":
        raise ValueError(f"overlays are written as .png, got {path.name!r}")
    masks = _label_dtype(masks)
    rgb = _display_rgb(image, masks.shape)
    rgb[masks_outlines(masks) > 0] = np.asarray(color, dtype=np.uint8)
    imwrite(path, rgb, overwrite=overwrite)
    return path


# --------------------------------------------------------------------------- pairing files


def _split_label_name(path: Path) -> str | None:
    """Base name of a label file (``a_masks.tif`` -> ``a``), or None if it is not one."""
    name = path.name
    if name.endswith("_seg.npy"):
        base = name[: -len("_seg.npy")]
    elif _suffix(path) in (".tif", ".tiff", ".png", ".npy"):
        base = next(
            (path.stem[: -len(s)] for s in ("_cp_masks", "_masks") if path.stem.endswith(s)),
            None,
        )
    else:
        return None
    return None if base is None else _strip_img(base)


def _strip_img(stem: str) -> str:
    return stem[: -len("_img")] if stem.endswith("_img") else stem


_KINDS = ("_masks", "_cp_masks", "_seg")


def _label_rank(path: Path) -> int:
    """0 for ``_masks``, 1 for ``_cp_masks``, 2 for ``_seg.npy``."""
    if path.name.endswith("_seg.npy"):
        return 2
    return 1 if path.stem.endswith("_cp_masks") else 0


def find_label_files(folder, *, kinds: Sequence[str] = LABEL_SUFFIXES) -> dict[str, Path]:
    """Label files of a folder keyed by image base name.

    Recognises ``<name>_masks.{tif,tiff,png}``, ``<name>_cp_masks.*`` and ``<name>_seg.npy``;
    a trailing ``_img`` is dropped from the base (``<id>_img.tif`` / ``<id>_masks.tif``
    layout). When a base has several label files, ``_masks`` wins over ``_cp_masks`` over
    ``_seg.npy``.

    Parameters
    ----------
    folder : str or os.PathLike
    kinds : sequence of str, optional
        Which of ``"_masks"``, ``"_cp_masks"``, ``"_seg"`` to accept. Default all.

    Returns
    -------
    dict of str to pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for n in ("a_masks.tif", "a_seg.npy", "b_cp_masks.png", "c.tif"):
    ...     (d / n).touch()
    >>> {k: v.name for k, v in find_label_files(d).items()}
    {'a': 'a_masks.tif', 'b': 'b_cp_masks.png'}
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        base = _split_label_name(path)
        if base is None or not path.is_file() or _KINDS[_label_rank(path)] not in kinds:
            continue
        if base not in found or _label_rank(path) < _label_rank(found[base]):
            found[base] = path
    return found


def _is_image(path: Path) -> bool:
    if _suffix(path) not in IMAGE_EXTENSIONS or path.name.startswith("."):
        return False
    stem = path.name[: -len(".npy")] if path.name.endswith(".npy") else path.stem
    return not any(stem.endswith(s) for s in _DERIVED_SUFFIXES)


def find_image_label_pairs(folder) -> list[tuple[Path, Path]]:
    """Pair every image of a folder with its label file.

    Images are ``<name>.{tif,tiff,png,jpg,npy,zarr}`` (or ``<id>_img.tif``); labels are found
    as in :func:`find_label_files`. Images without labels are skipped (and logged).

    Parameters
    ----------
    folder : str or os.PathLike

    Returns
    -------
    list of (pathlib.Path, pathlib.Path)
        ``(image_path, label_path)`` sorted by image name.

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for n in ("x_img.tif", "x_masks.tif", "y.png", "y_seg.npy", "z.tif"):
    ...     (d / n).touch()
    >>> [(i.name, m.name) for i, m in find_image_label_pairs(d)]
    [('x_img.tif', 'x_masks.tif'), ('y.png', 'y_seg.npy')]
    """
    labels = find_label_files(folder)
    pairs = []
    for path in sorted(Path(folder).iterdir()):
        if not _is_image(path):
            continue
        base = _strip_img(path.stem)
        if base in labels:
            pairs.append((path, labels[base]))
        else:
            logger.info("no label file for %s", path.name)
    return pairs
