"""Training augmentation: random flip, rotation, scale and translation into square crops.

One affine map per image takes the input image to a ``bsize × bsize`` crop::

    p_out = c_out + t + s · R · F · (p_in - c_in)

with ``F`` an optional horizontal flip (x → -x), ``R`` a rotation by a uniform angle, ``s`` a
random scale around the diameter normalisation (``s = U(1 - r/2, 1 + r/2) / (diam / diam_mean)``
so that objects land near ``diam_mean``), ``c_in``/``c_out`` the image and crop centres and ``t``
a random translation that keeps the crop inside the scaled image where it can. The inverse map is
sampled with :func:`torch.nn.functional.grid_sample` for the whole batch at once: images and flows
bilinearly, labels with nearest neighbour, zeros outside the image. Flow vectors are then turned
by ``R · F`` so that they still point along the augmented image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentedBatch:
    """A batch of augmented crops.

    Attributes
    ----------
    images : torch.Tensor
        ``(B, C, bsize, bsize)`` float32.
    labels : torch.Tensor or None
        ``(B, bsize, bsize)`` int64 labels (nearest-neighbour sampled).
    flows : torch.Tensor or None
        ``(B, 2, bsize, bsize)`` float32 (dY, dX), rotated and flipped with the image.
    scale : numpy.ndarray
        ``(B,)`` the scale factor applied to each image.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    flows: torch.Tensor | None
    scale: np.ndarray

    def target(self) -> torch.Tensor:
        """Return the loss target ``(B, 3, bsize, bsize)`` = (cell probability, dY, dX).

        Examples
        --------
        >>> import numpy as np
        >>> img = np.ones((1, 16, 16), np.float32)
        >>> lab = np.zeros((16, 16), np.int64)
        >>> fl = np.zeros((2, 16, 16), np.float32)
        >>> b = random_rotate_and_resize(
        ...     [img], labels=[lab], flows=[fl], rng=np.random.default_rng(0), bsize=8)
        >>> tuple(b.target().shape)
        (1, 3, 8, 8)
        """
        if self.labels is None or self.flows is None:
            raise ValueError("target() needs a batch augmented with both labels and flows")
        prob = (self.labels > 0).to(self.flows.dtype)[:, None]
        return torch.cat([prob, self.flows], dim=1)


def _stack_padded(arrays: Sequence, device: torch.device) -> torch.Tensor:
    """Stack ``(C, H, W)`` arrays of different sizes into a zero-padded ``(B, C, Hm, Wm)``."""
    tensors = [torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in arrays]
    if len({t.shape for t in tensors}) == 1:
        return torch.stack(tensors).to(device)
    hm = max(t.shape[-2] for t in tensors)
    wm = max(t.shape[-1] for t in tensors)
    out = torch.zeros((len(tensors), tensors[0].shape[0], hm, wm), dtype=torch.float32)
    for i, t in enumerate(tensors):
        out[i, :, : t.shape[-2], : t.shape[-1]] = t
    return out.to(device)


def _sample_params(shapes, rng, *, bsize, scale_range, diameters, diam_mean, rotate, flip):
    """Draw per-image linear maps ``A = s R F`` (B,2,2), flow maps ``R F`` and translations."""
    n = len(shapes)
    theta = rng.uniform(0.0, 2 * np.pi, n) if rotate else np.zeros(n)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    scale = (1 - scale_range / 2) + scale_range * rng.random(n)
    if diameters is not None:
        diam = np.asarray(diameters, dtype=np.float64)
        rsc = np.where(diam > 0, diam / diam_mean, 1.0)
        scale = scale / rsc
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1)  # (y, x) order
    fmat = np.tile(np.eye(2), (n, 1, 1))
    fmat[flips, 1, 1] = -1.0
    rf = rot @ fmat
    sizes = np.asarray(shapes, dtype=np.float64) * scale[:, None]
    room = np.maximum(0.0, sizes - bsize)
    shift = (rng.random((n, 2)) - 0.5) * room
    return rf, scale, shift


def _grid(shapes, padded_hw, rf, scale, shift, bsize) -> torch.Tensor:
    """Sampling grid ``(B, bsize, bsize, 2)`` in grid_sample's normalised (x, y) coordinates."""
    c_in = (np.asarray(shapes, dtype=np.float64) - 1) / 2
    ainv = np.transpose(rf, (0, 2, 1)) / scale[:, None, None]  # inverse of s R F, (y, x) order
    d_in = 2.0 / np.maximum(np.asarray(padded_hw, dtype=np.float64) - 1, 1)
    lin = d_in[None, :, None] * ainv * (bsize - 1) / 2
    off = d_in[None] * (c_in - np.einsum("bij,bj->bi", ainv, shift)) - 1
    theta = np.concatenate([lin[:, ::-1, ::-1], off[:, ::-1, None]], axis=2)  # to (x, y) order
    size = (len(shapes), 1, bsize, bsize)
    return F.affine_grid(torch.from_numpy(theta.astype(np.float32)), size, align_corners=True)


def _check_inputs(images, labels, flows):
    if len(images) == 0:
        raise ValueError("images must be a non-empty sequence of (C, H, W) arrays")
    shapes = []
    for i, img in enumerate(images):
        if np.ndim(img) != 3:
            raise ValueError(f"images[{i}] must be (C, H, W), got shape {np.shape(img)}")
        shapes.append(tuple(np.shape(img)[-2:]))
    for name, seq, nd in (("labels", labels, 2), ("flows", flows, 3)):
        if seq is None:
            continue
        if len(seq) != len(images):
            raise ValueError(f"{name} has {len(seq)} entries but images has {len(images)}")
        for i, (arr, shp) in enumerate(zip(seq, shapes)):
            if np.ndim(arr) != nd or tuple(np.shape(arr)[-2:]) != shp:
                raise ValueError(
                    f"{name}[{i}] must be {'(H, W)' if nd == 2 else '(2, H, W)'} matching its "
                    f"image {shp}, got shape {np.shape(arr)}"
                )
    return shapes


def random_rotate_and_resize(
    images: Sequence,
    labels: Sequence | None = None,
    flows: Sequence | None = None,
    *,
    rng: np.random.Generator,
    bsize: int = 224,
    scale_range: float = 0.5,
    diameters: Sequence[float] | None = None,
    diam_mean: float = 30.0,
    rotate: bool = True,
    flip: bool = True,
    device: torch.device | str | None = None,
) -> AugmentedBatch:
    """Randomly flip, rotate, scale and crop a batch of images with their labels and flows.

    Parameters
    ----------
    images : sequence of array
        ``(C, H, W)`` float images; sizes may differ.
    labels : sequence of array, optional
        ``(H, W)`` integer labels, sampled with nearest neighbour.
    flows : sequence of array, optional
        ``(2, H, W)`` unit flows (dY, dX); sampled bilinearly, then rotated and flipped.
    rng : numpy.random.Generator
        Source of every random draw (no global RNG is touched).
    bsize : int
        Side of the square output crops.
    scale_range : float
        Relative scale jitter ``r``: the scale is drawn from ``U(1 - r/2, 1 + r/2)``.
    diameters : sequence of float, optional
        Per-image object diameters; the scale is divided by ``diameter / diam_mean`` so objects
        land near ``diam_mean``. Entries <= 0 mean "unknown" (no normalisation).
    diam_mean : float
        Target object diameter of the network.
    rotate, flip : bool
        Enable the random rotation (uniform angle) and the horizontal flip (p = 0.5).
    device : torch.device or str, optional
        Where to compute (default CPU).

    Returns
    -------
    AugmentedBatch

    Examples
    --------
    >>> import numpy as np
    >>> imgs = [np.random.default_rng(0).random((2, 40, 50), dtype=np.float32)]
    >>> out = random_rotate_and_resize(imgs, rng=np.random.default_rng(1), bsize=32)
    >>> tuple(out.images.shape), out.labels is None
    ((1, 2, 32, 32), True)
    """
    shapes = _check_inputs(images, labels, flows)
    if bsize < 1:
        raise ValueError(f"bsize must be a positive integer, got {bsize}")
    if not 0 <= scale_range < 2:
        raise ValueError(f"scale_range must be in [0, 2), got {scale_range}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    rf, scale, shift = _sample_params(
        shapes, rng, bsize=bsize, scale_range=scale_range, diameters=diameters,
        diam_mean=diam_mean, rotate=rotate, flip=flip,
    )  # fmt: skip
    nchan = np.shape(images[0])[0]
    bilinear = list(images) if flows is None else [
        np.concatenate([np.asarray(i, np.float32), np.asarray(f, np.float32)])
        for i, f in zip(images, flows)
    ]  # fmt: skip
    x = _stack_padded(bilinear, device)
    grid = _grid(shapes, x.shape[-2:], rf, scale, shift, bsize).to(device)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    imgs, fl = out[:, :nchan], None
    if flows is not None:
        rf_t = torch.as_tensor(rf, dtype=torch.float32, device=device)
        fl = torch.einsum("bij,bjhw->bihw", rf_t, out[:, nchan:])
    lab = None
    if labels is not None:
        lx = _stack_padded([np.asarray(lb)[None] for lb in labels], device)
        lab = F.grid_sample(lx, grid, mode="nearest", padding_mode="zeros", align_corners=True)
        lab = lab[:, 0].round().long()
    return AugmentedBatch(images=imgs.contiguous(), labels=lab, flows=fl, scale=scale)
