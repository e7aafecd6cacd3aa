"""Training on z-stacks: a ``(Z, Y, X)`` image + labels pair becomes 2-D plane pairs in the three
orientations (YX, ZY, ZX), with Z resized by the anisotropy, as Cellpose trains on 3-D data
(its ``make_train`` slices stacks the same way). The network stays 2-D; a model trained on these
planes is the one ``Model.segment(do_3d=True)`` runs on the YX, ZY and ZX planes of a stack.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["is_stack_pair", "stack_to_planes"]


def is_stack_pair(image, labels) -> bool:
    """Whether ``(image, labels)`` is a z-stack pair: 3-D labels ``(Z, Y, X)``.

    Examples
    --------
    >>> is_stack_pair(np.zeros((4, 8, 8)), np.zeros((4, 8, 8), int))
    True
    """
    return np.ndim(labels) == 3


def _relabel_plane(plane: np.ndarray) -> np.ndarray:
    """Consecutive ids, one per 8-connected piece: a cell cut twice by a plane is two ROIs."""
    from skimage.measure import label

    return label(plane, background=0, connectivity=2).astype(np.int32)


def _orientations(img: np.ndarray, lab: np.ndarray, anisotropy: float):
    """(name, image planes (N, H, W[, C]), label planes (N, H, W)) for YX, ZY and ZX."""
    from cp2_engine.inference import resize_image

    zy_img, zy_lab = np.moveaxis(img, 2, 0), np.moveaxis(lab, 2, 0)  # (X, Z, Y[, C])
    zx_img, zx_lab = np.moveaxis(img, 1, 0), np.moveaxis(lab, 1, 0)  # (Y, Z, X[, C])
    out = [("YX", img, lab)]
    for name, pim, plab in (("ZY", zy_img, zy_lab), ("ZX", zx_img, zx_lab)):
        nz = max(1, round(plab.shape[1] * anisotropy))
        if nz != plab.shape[1]:
            shape = (nz, plab.shape[2])
            chans = pim.ndim == 4  # (N, H, W, C): resize_image wants channels first
            pim = np.stack(
                [
                    np.moveaxis(resize_image(np.moveaxis(p, -1, 0), shape=shape), 0, -1)
                    if chans
                    else resize_image(p, shape=shape)
                    for p in pim
                ]
            )
            plab = np.stack([resize_image(p, shape=shape, interpolation="nearest") for p in plab])
        out.append((name, pim, plab))
    return out


def stack_to_planes(
    image,
    labels,
    *,
    anisotropy: float | None = None,
    min_masks: int = 1,
    max_planes_per_axis: int | None = None,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Expand a z-stack image and its labels into 2-D training pairs in three orientations.

    Every YX plane, every ZY plane (one per x) and every ZX plane (one per y) becomes a pair;
    in ZY and ZX planes the Z axis is resized by ``anisotropy`` (linear for the image, nearest
    for the labels) so that cells have the shape they have in YX planes. Each plane's labels are
    relabelled: consecutive ids, one per connected piece. Planes with fewer than ``min_masks``
    ROIs are dropped.

    Parameters
    ----------
    image : array_like
        ``(Z, Y, X)`` or ``(Z, Y, X, C)`` (channels last).
    labels : array_like of int
        ``(Z, Y, X)``, 0 = background.
    anisotropy : float, optional
        z step divided by the xy pixel size; None means 1.
    min_masks : int
        Planes with fewer ROIs are dropped (``TrainConfig.min_train_masks`` in training);
        planes without any ROI are always dropped.
    max_planes_per_axis : int, optional
        Keep at most this many planes per orientation (evenly spaced, in order; the choice
        does not depend on ``seed`` yet, kept for a later random choice). None keeps all: a
        ``(Z, Y, X)`` stack gives up to ``Z + Y + X`` planes, so large stacks need this to bound
        memory.
    seed : int
        Reserved (deterministic today).

    Returns
    -------
    images, labels : list of ndarray
        2-D images ``(H, W)`` / ``(H, W, C)`` and ``(H, W)`` int32 labels, YX planes first,
        then ZY, then ZX.

    Raises
    ------
    ValueError
        Labels not 3-D, an image whose first three axes differ from the labels', negative
        labels, or a non-positive anisotropy.

    Examples
    --------
    >>> from cp2_engine.synthetic import touching_cells_3d
    >>> s = touching_cells_3d((6, 40, 40), diameter=12, anisotropy=2.0, seed=1)
    >>> ims, labs = stack_to_planes(s.image, s.labels, anisotropy=2.0)
    >>> ims[0].shape, labs[-1].shape
    ((40, 40), (12, 40))
    """
    del seed
    img, lab = np.asarray(image), np.asarray(labels)
    if lab.ndim != 3 or not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
        raise ValueError(f"labels of a z-stack must be (Z, Y, X) integers, got {lab.dtype} "
                         f"{lab.shape}")  # fmt: skip
    if img.ndim not in (3, 4) or img.shape[:3] != lab.shape:
        raise ValueError(
            f"a z-stack image must be (Z, Y, X) or (Z, Y, X, C) matching its labels {lab.shape}, "
            f"got {img.shape}"
        )
    if lab.size and lab.min() < 0:
        raise ValueError("labels have negative values; expected 0 = background, ids > 0")
    aniso = 1.0 if anisotropy is None else float(anisotropy)
    if not (np.isfinite(aniso) and aniso > 0):
        raise ValueError(f"anisotropy must be a positive number, got {anisotropy!r}")
    images_out: list[np.ndarray] = []
    labels_out: list[np.ndarray] = []
    for name, pim, plab in _orientations(img, lab, aniso):
        idx = np.arange(len(plab))
        if max_planes_per_axis is not None and len(idx) > max_planes_per_axis:
            idx = np.unique(np.linspace(0, len(idx) - 1, int(max_planes_per_axis)).round())
        kept = 0
        for i in idx.astype(int):
            rel = _relabel_plane(plab[i])
            if rel.max() < max(min_masks, 1):
                continue
            images_out.append(np.ascontiguousarray(pim[i]))
            labels_out.append(rel)
            kept += 1
        logger.debug("z-stack %s: %d of %d planes kept", name, kept, len(plab))
    return images_out, labels_out
