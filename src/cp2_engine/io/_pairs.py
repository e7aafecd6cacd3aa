"""The one image/label naming rule: pairing the images of a folder with their label files.

An image ``<base>.<ext>`` (or ``<base>_img.<ext>``) has the labels ``<base><mask_filter>.<ext>``
(``mask_filter`` = ``_masks`` unless the user names another suffix), ``<base>_cp_masks.<ext>``
(the masks Cellpose or ``cp2 segment`` predicted) or ``<base>_seg.npy`` (the Cellpose GUI's
file); when a base has several, ``_masks`` wins over ``_cp_masks`` over ``_seg.npy``. A trailing
``_img`` is dropped from image and label bases alike (:func:`image_base`). Training, the demo,
``cp2 eval`` / ``measure`` / ``rois`` and the napari plugin all pair files with these functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from cp2_engine.io._images import IMAGE_EXTENSIONS, _suffix

logger = logging.getLogger(__name__)

#: Suffixes (before the extension) of label files, most preferred first.
LABEL_SUFFIXES = ("_masks", "_cp_masks", "_seg")
#: Extensions of ``_masks`` / ``_cp_masks`` label files.
_MASK_EXTENSIONS = (".tif", ".tiff", ".png", ".npy")
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

__all__ = [
    "LABEL_SUFFIXES",
    "find_image_label_pairs",
    "find_images",
    "find_label_files",
    "image_base",
    "split_label_name",
]


def image_base(path: str | os.PathLike) -> str:
    """The name that pairs an image with its labels: the file name without its image extension
    and without a trailing ``_img`` (a napari layer name works too).

    Examples
    --------
    >>> image_base("data/x_img.tif"), image_base("y.png"), image_base("z_img"), image_base("a.b")
    ('x', 'y', 'z', 'a.b')
    """
    path = Path(path)
    stem = path.stem if _suffix(path) in IMAGE_EXTENSIONS else path.name
    return stem[: -len("_img")] if stem.endswith("_img") else stem


def split_label_name(path: str | os.PathLike, *,
                     mask_filter: str = "_masks") -> tuple[str, str] | None:  # fmt: skip
    """``(kind, name)`` of a label file, or None when it is not one.

    ``kind`` is ``"_masks"`` (``<name><mask_filter>.{tif,tiff,png,npy}``), ``"_cp_masks"`` or
    ``"_seg"`` (``<name>_seg.npy``); ``name`` is what precedes the suffix (a trailing ``_img``
    kept: :func:`image_base` of it is the pairing base).

    Examples
    --------
    >>> split_label_name("x_img_masks.tif"), split_label_name("a_cp_masks.png")
    (('_masks', 'x_img'), ('_cp_masks', 'a'))
    >>> split_label_name("a_seg.npy"), split_label_name("a.tif")
    (('_seg', 'a'), None)
    """
    path = Path(path)
    if path.name.endswith("_seg.npy"):
        return "_seg", path.name[: -len("_seg.npy")]
    if _suffix(path) not in _MASK_EXTENSIONS:
        return None
    for kind, suffix in (("_cp_masks", "_cp_masks"), ("_masks", mask_filter)):
        if path.stem.endswith(suffix):
            return kind, path.stem[: -len(suffix)]
    return None


def find_label_files(folder, *, kinds: Sequence[str] = LABEL_SUFFIXES,
                     mask_filter: str = "_masks") -> dict[str, Path]:  # fmt: skip
    """Label files of a folder keyed by image base name (:func:`image_base`).

    Recognises ``<name><mask_filter>.{tif,tiff,png,npy}``, ``<name>_cp_masks.*`` and
    ``<name>_seg.npy``; a trailing ``_img`` is dropped from the base (``<id>_img.tif`` /
    ``<id>_masks.tif`` layout). When a base has several label files, ``_masks`` wins over
    ``_cp_masks`` over ``_seg.npy``.

    Parameters
    ----------
    folder : str or os.PathLike
    kinds : sequence of str, optional
        Which of ``"_masks"``, ``"_cp_masks"``, ``"_seg"`` to accept. Default all.
    mask_filter : str, optional
        The suffix of the ``"_masks"`` kind (``cp2 train --mask-filter``). Default ``_masks``.

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
    found: dict[str, tuple[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        kind_name = split_label_name(path, mask_filter=mask_filter)
        if kind_name is None or kind_name[0] not in kinds or not path.is_file():
            continue
        kind, base = kind_name[0], image_base(kind_name[1])
        rank = LABEL_SUFFIXES.index(kind)
        if base not in found or rank < found[base][0]:
            found[base] = (rank, path)
    return {base: path for base, (_, path) in found.items()}


def _is_image(path: Path, mask_filter: str = "_masks") -> bool:
    if _suffix(path) not in IMAGE_EXTENSIONS or path.name.startswith("."):
        return False
    stem = path.name[: -len(".npy")] if path.name.endswith(".npy") else path.stem
    return not any(stem.endswith(s) for s in (*_DERIVED_SUFFIXES, mask_filter))


def find_image_label_pairs(folder, *, kinds: Sequence[str] = LABEL_SUFFIXES,
                           mask_filter: str = "_masks") -> list[tuple[Path, Path]]:  # fmt: skip
    """Pair every image of a folder with its label file.

    Images are ``<name>.{tif,tiff,png,jpg,npy,zarr}`` (or ``<id>_img.tif``); labels are found
    as in :func:`find_label_files`. Images without labels are skipped (and logged).

    Parameters
    ----------
    folder : str or os.PathLike
    kinds, mask_filter
        As for :func:`find_label_files`.

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
    labels = find_label_files(folder, kinds=kinds, mask_filter=mask_filter)
    pairs = []
    for path in find_images(folder, mask_filter=mask_filter):
        base = image_base(path)
        if base in labels:
            pairs.append((path, labels[base]))
        else:
            logger.info("no label file for %s", path.name)
    return pairs


def find_images(folder, *, mask_filter: str = "_masks") -> list[Path]:
    """The images of a folder, without the label and output files cp2 or Cellpose wrote there.

    Parameters
    ----------
    folder : str or os.PathLike
    mask_filter : str, optional
        A further label suffix to leave out (as for :func:`find_label_files`).

    Returns
    -------
    list of pathlib.Path
        Sorted by name.

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for n in ("a.tif", "a_cp_masks.tif", "a_cp_overlay.png", "b.png", "notes.txt"):
    ...     (d / n).touch()
    >>> [p.name for p in find_images(d)]
    ['a.tif', 'b.png']
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    return [p for p in sorted(folder.iterdir()) if _is_image(p, mask_filter)]
