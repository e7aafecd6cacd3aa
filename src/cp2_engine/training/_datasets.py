"""Training data: load labelled images and the dataset utilities of the Cellpose 2.0 methods.

- :func:`load_folder` reads a folder of images with ``_masks.tif``/``.png`` or ``_seg.npy``
  labels (cp2's one naming rule, :func:`cp2_engine.io.find_label_files`); :func:`from_arrays`
  checks lists of arrays.
- :func:`remove_overlaps` turns overlapping binary annotations (LiveCell style) into one label
  image: pixels claimed by several masks go to the mask with the nearest centroid, and a mask
  that loses more than 75% of its pixels is dropped.
- :func:`split_quarters` splits an image (TissueNet 512²) into its four quarters.
- :func:`training_subsets` / :func:`take_subset` draw the random training subsets of 0.25, 0.5,
  1, 2, 4, ... images with several seeds; a fraction is a crop of one image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.segmentation import relabel_sequential

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabeledImages:
    """Images with their instance labels.

    Attributes
    ----------
    images : list of ndarray
        Images as read (``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``).
    labels : list of ndarray
        ``(H, W)`` integer labels, 0 = background.
    names : list of str
        An identifier per image (the file stem for folders).
    """

    images: list
    labels: list
    names: list

    def __len__(self) -> int:
        return len(self.images)


def load_folder(
    folder: str | Path, *, mask_filter: str = "_masks", require_labels: bool = True
) -> LabeledImages:
    """Load every image of a folder that has labels beside it.

    Images and labels are paired by cp2's one naming rule
    (:func:`cp2_engine.io.find_label_files`): ``<name><mask_filter>.tif|.tiff|.png|.npy`` or
    ``<name>_seg.npy`` beside ``<name>.*`` or ``<name>_img.*``. Predicted ``_cp_masks`` are
    never training labels.

    Parameters
    ----------
    folder : str or Path
        The folder to read (not recursive).
    mask_filter : str
        Suffix of the label files.
    require_labels : bool
        Raise when an image has no labels (else it is skipped with a log message).

    Returns
    -------
    LabeledImages

    Examples
    --------
    >>> import tempfile, tifffile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> tifffile.imwrite(f"{d}/a_img.tif", np.zeros((8, 8), np.uint8))
    >>> tifffile.imwrite(f"{d}/a_masks.tif", np.ones((8, 8), np.uint16))
    >>> load_folder(d).names
    ['a']
    """
    from cp2_engine import io

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"training folder not found: {folder}")
    found = io.find_label_files(folder, kinds=("_masks", "_seg"), mask_filter=mask_filter)
    images, labels, names = [], [], []
    for path in io.find_images(folder, mask_filter=mask_filter):
        name = io.image_base(path)
        if name not in found:
            if require_labels:
                raise FileNotFoundError(
                    f"no labels for {path.name}: expected {name}{mask_filter}.tif/.png or "
                    f"{name}_seg.npy"
                )
            logger.info("skipping %s: no labels", path.name)
            continue
        labels.append(io.read_labels(found[name]))  # a _seg.npy is read by the safe unpickler
        images.append(np.asarray(io.imread(path)))
        names.append(name)
    if not images:
        raise FileNotFoundError(f"no labelled images found in {folder}")
    logger.info("loaded %d labelled images from %s", len(images), folder)
    return from_arrays(images, labels, names=names)


def _spatial_shape(image: np.ndarray, lab_shape: tuple) -> bool:
    return image.shape[:2] == lab_shape or image.shape[-2:] == lab_shape


def from_arrays(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    names: Sequence[str] | None = None,
) -> LabeledImages:
    """Check lists of images and labels and wrap them as :class:`LabeledImages`.

    Parameters
    ----------
    images : sequence of ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` images.
    labels : sequence of ndarray
        ``(H, W)`` integer labels matching each image's spatial shape.
    names : sequence of str, optional
        Identifiers (default ``"0"``, ``"1"``, ...).

    Returns
    -------
    LabeledImages

    Examples
    --------
    >>> import numpy as np
    >>> len(from_arrays([np.zeros((4, 4))], [np.zeros((4, 4), int)]))
    1
    """
    images, labels = list(images), list(labels)
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} label images")
    if not images:
        raise ValueError("expected at least one image with labels, got empty lists")
    for i, (img, lab) in enumerate(zip(images, labels)):
        img, lab = np.asarray(img), np.asarray(lab)
        if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(
                f"labels[{i}] must be a 2-D integer array, got {lab.dtype} shape {lab.shape}"
            )
        if img.ndim not in (2, 3) or not _spatial_shape(img, lab.shape):
            raise ValueError(
                f"images[{i}] of shape {img.shape} does not match its labels {lab.shape}: "
                "expected (H, W), (H, W, C) or (C, H, W)"
            )
        images[i], labels[i] = img, lab
    names = [str(i) for i in range(len(images))] if names is None else [str(n) for n in names]
    return LabeledImages(images=images, labels=labels, names=names)


def remove_overlaps(masks, *, max_loss: float = 0.75) -> np.ndarray:
    """Merge overlapping binary masks into one label image.

    Each pixel covered by several masks goes to the mask whose centroid is nearest; a mask that
    keeps less than ``1 - max_loss`` of its pixels is dropped. Labels are renumbered 1..N in
    input order.

    Parameters
    ----------
    masks : ndarray or sequence of ndarray
        ``(N, H, W)`` boolean stack (or a list of ``(H, W)`` masks).
    max_loss : float
        Largest fraction of its pixels a mask may lose and still be kept.

    Returns
    -------
    ndarray
        ``(H, W)`` uint32 labels.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((2, 1, 6), bool)
    >>> m[0, 0, :4] = True
    >>> m[1, 0, 2:] = True
    >>> remove_overlaps(m)
    array([[1, 1, 1, 2, 2, 2]], dtype=uint32)
    """
    stack = np.asarray(list(masks) if not isinstance(masks, np.ndarray) else masks).astype(bool)
    if stack.ndim != 3:
        raise ValueError(f"masks must be a (N, H, W) stack of binary masks, got {stack.shape}")
    if not 0 <= max_loss <= 1:
        raise ValueError(f"max_loss must lie in [0, 1], got {max_loss}")
    n = stack.shape[0]
    out = np.zeros(stack.shape[1:], np.uint32)
    if n == 0:
        return out
    area = stack.sum(axis=(1, 2))
    best = np.full(stack.shape[1:], np.inf)
    for i in np.flatnonzero(area):
        ys, xs = np.nonzero(stack[i])
        d = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
        take = d < best[ys, xs]
        out[ys[take], xs[take]] = i + 1
        best[ys[take], xs[take]] = d[take]
    kept = np.bincount(out.ravel(), minlength=n + 1)[1:]
    drop = np.flatnonzero((area > 0) & (kept < (1 - max_loss) * area)) + 1
    if drop.size:
        logger.info(
            "remove_overlaps: dropped %d masks that lost > %.0f%%", drop.size, 100 * max_loss
        )
        out[np.isin(out, drop)] = 0
    return relabel_sequential(out)[0].astype(np.uint32)


def _crop(arr: np.ndarray, lab_shape: tuple, ys: slice, xs: slice) -> np.ndarray:
    if arr.shape[:2] == lab_shape:
        return arr[ys, xs]
    return arr[..., ys, xs]


def split_quarters(image: np.ndarray, labels: np.ndarray | None = None) -> list:
    """Split an image (and its labels) into four quarters, row by row.

    Parameters
    ----------
    image : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``; with ``labels`` the spatial axes are those
        matching the labels, else the first two for 2-D/3-D channel-last data.
    labels : ndarray, optional
        ``(H, W)`` labels; each quarter's labels are renumbered 1..N.

    Returns
    -------
    list
        Four images, or four ``(image, labels)`` pairs when labels are given.

    Examples
    --------
    >>> import numpy as np
    >>> [q.shape for q in split_quarters(np.zeros((512, 512)))]
    [(256, 256), (256, 256), (256, 256), (256, 256)]
    """
    image = np.asarray(image)
    hw = tuple(np.asarray(labels).shape) if labels is not None else image.shape[:2]
    if labels is not None and not _spatial_shape(image, hw):
        raise ValueError(f"image {image.shape} does not match labels {hw}")
    h2, w2 = hw[0] // 2, hw[1] // 2
    if h2 == 0 or w2 == 0:
        raise ValueError(f"image too small to split into quarters: {hw}")
    out = []
    for ys in (slice(0, h2), slice(h2, 2 * h2)):
        for xs in (slice(0, w2), slice(w2, 2 * w2)):
            img = _crop(image, hw, ys, xs)
            if labels is None:
                out.append(img)
            else:
                lab = relabel_sequential(np.asarray(labels)[ys, xs])[0]
                out.append((img, lab))
    return out


@dataclass(frozen=True)
class Subset:
    """One random training subset.

    Attributes
    ----------
    size : float
        Number of images (0.25 and 0.5 mean a quarter and a half of one image).
    seed : int
        Which of the repeats this is.
    indices : tuple of int
        Indices of the chosen images.
    region : tuple of float
        ``(y0, y1, x0, x1)`` as fractions of each image's height and width (the whole image
        ``(0, 1, 0, 1)`` unless ``size < 1``).
    """

    size: float
    seed: int
    indices: tuple
    region: tuple = (0.0, 1.0, 0.0, 1.0)


_QUARTERS = ((0, 0.5, 0, 0.5), (0, 0.5, 0.5, 1), (0.5, 1, 0, 0.5), (0.5, 1, 0.5, 1))
_HALVES = ((0, 0.5, 0, 1), (0.5, 1, 0, 1), (0, 1, 0, 0.5), (0, 1, 0.5, 1))


def default_subset_sizes(n_images: int) -> tuple:
    """Sizes 0.25, 0.5, 1, 2, 4, ... up to ``n_images``.

    Examples
    --------
    >>> default_subset_sizes(5)
    (0.25, 0.5, 1, 2, 4)
    """
    sizes, k = [0.25, 0.5], 1
    while k <= n_images:
        sizes.append(k)
        k *= 2
    return tuple(sizes)


def training_subsets(
    n_images: int, *, sizes: Sequence[float] | None = None, n_seeds: int = 5, seed: int = 0
) -> list[Subset]:
    """Draw random training subsets of each size, ``n_seeds`` times.

    Parameters
    ----------
    n_images : int
        Number of available training images.
    sizes : sequence of float, optional
        Subset sizes; fractions 0.25 and 0.5 are crops of one image; whole numbers are image
        counts. Default :func:`default_subset_sizes`.
    n_seeds : int
        Repeats per size.
    seed : int
        Base seed (a local generator per size and repeat).

    Returns
    -------
    list of Subset

    Examples
    --------
    >>> subs = training_subsets(8, sizes=(0.25, 2), n_seeds=2)
    >>> [(s.size, len(s.indices)) for s in subs]
    [(0.25, 1), (0.25, 1), (2, 2), (2, 2)]
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    sizes = default_subset_sizes(n_images) if sizes is None else tuple(sizes)
    out = []
    for size in sizes:
        if size not in (0.25, 0.5) and (size != int(size) or not 1 <= size <= n_images):
            raise ValueError(
                f"subset size must be 0.25, 0.5 or a whole number in [1, {n_images}], got {size}"
            )
        for rep in range(n_seeds):
            rng = np.random.default_rng([seed, round(size * 4), rep])
            count = max(1, int(size))
            idx = tuple(int(i) for i in np.sort(rng.choice(n_images, count, replace=False)))
            region = (0.0, 1.0, 0.0, 1.0)
            if size < 1:
                choices = _QUARTERS if size == 0.25 else _HALVES
                region = tuple(float(v) for v in choices[rng.integers(len(choices))])
            out.append(Subset(size=size, seed=rep, indices=idx, region=region))
    return out


def take_subset(images: Sequence, labels: Sequence, subset: Subset) -> tuple[list, list]:
    """Return the images and labels of a :class:`Subset` (cropped when it is a fraction).

    Examples
    --------
    >>> import numpy as np
    >>> imgs, labs = take_subset([np.zeros((8, 8))], [np.ones((8, 8), int)],
    ...                          Subset(size=0.25, seed=0, indices=(0,), region=(0, .5, 0, .5)))
    >>> imgs[0].shape, int(labs[0].max())
    ((4, 4), 1)
    """
    out_i, out_l = [], []
    y0, y1, x0, x1 = subset.region
    for i in subset.indices:
        img, lab = np.asarray(images[i]), np.asarray(labels[i])
        h, w = lab.shape
        ys = slice(round(y0 * h), round(y1 * h))
        xs = slice(round(x0 * w), round(x1 * w))
        out_i.append(_crop(img, lab.shape, ys, xs))
        out_l.append(relabel_sequential(lab[ys, xs])[0])
    return out_i, out_l
