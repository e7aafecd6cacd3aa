"""Pairing the images of a folder with their label files (``_masks``, ``_cp_masks``, ``_seg``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cp2_engine.io._images import IMAGE_EXTENSIONS, _suffix

logger = logging.getLogger(__name__)

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

__all__ = ["LABEL_SUFFIXES", "find_image_label_pairs", "find_images", "find_label_files"]


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


def find_images(folder) -> list[Path]:
    """The images of a folder, without the label and output files cp2 or Cellpose wrote there.

    Parameters
    ----------
    folder : str or os.PathLike

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
    return [p for p in sorted(folder.iterdir()) if _is_image(p)]
