"""Masks → flows in 3-D: the 2-D heat-diffusion algorithm of ``docs/architecture.md`` with
one more axis.

For each label (after consecutive renumbering), on its bounding box padded by one voxel:

1. Centre = the mask voxel nearest (Euclidean) to the mask's centroid (first in raster order on
   ties).
2. Heat ``T = 0``. For ``niter = 2 * (d + h + w + 2)`` iterations (d, h, w = bounding-box
   extent): ``T[centre] += 1``, then every voxel **of this mask** becomes the mean of its
   3×3×3 neighbourhood, where neighbours outside the mask count as 0 (absorbing boundary).
   Heat is zero outside the mask at all times, so the 27-voxel sum is computed separably
   (three 3-tap sums).
3. Gradient by central differences with outside = 0 (dZ, dY, dX).
4. Unit-normalise inside the mask; zero outside.

Cellpose 3.1 has two different 3-D label flows (on the CPU the SUM of 2-D flows of every YX, ZY
and ZX slice, on a GPU a 7-point diffusion); cp2 has this one. Both point every voxel towards its
cell's centre, which is all the 3-D dynamics and the tests need.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from cp2_engine.postprocess._flows import _GRAD_TOL, consecutive_labels

_INV27 = 1.0 / 27.0


@njit(cache=True, nogil=True)
def _label_table3d(lab, n):  # pragma: no cover - numba
    """Per-label counts, bounding boxes, coordinate sums and raster-ordered voxel lists."""
    d, h, w = lab.shape
    counts = np.zeros(n + 1, np.int64)
    box = np.empty((6, n + 1), np.int64)  # zmin, ymin, xmin, zmax, ymax, xmax
    box[0, :] = d
    box[1, :] = h
    box[2, :] = w
    box[3:, :] = -1
    sums = np.zeros((3, n + 1), np.int64)
    for z in range(d):
        for y in range(h):
            for x in range(w):
                k = lab[z, y, x]
                if k > 0:
                    counts[k] += 1
                    box[0, k] = min(box[0, k], z)
                    box[1, k] = min(box[1, k], y)
                    box[2, k] = min(box[2, k], x)
                    box[3, k] = max(box[3, k], z)
                    box[4, k] = max(box[4, k], y)
                    box[5, k] = max(box[5, k], x)
                    sums[0, k] += z
                    sums[1, k] += y
                    sums[2, k] += x
    offsets = np.zeros(n + 2, np.int64)
    for k in range(1, n + 1):
        offsets[k + 1] = offsets[k] + counts[k]
    fill = offsets.copy()
    pix = np.empty((3, offsets[n + 1]), np.int32)
    for z in range(d):
        for y in range(h):
            for x in range(w):
                k = lab[z, y, x]
                if k > 0:
                    pix[0, fill[k]] = z
                    pix[1, fill[k]] = y
                    pix[2, fill[k]] = x
                    fill[k] += 1
    return counts, box, sums, offsets, pix


@njit(cache=True, nogil=True)
def _heat_box3d(inside, cz, cy, cx, niter):  # pragma: no cover - numba
    """Jacobi heat diffusion (3×3×3 mean) on one padded box; ``inside`` is 1.0 on the mask."""
    bd, bh, bw = inside.shape
    t = np.zeros((bd, bh, bw), np.float64)
    sx = np.zeros((bd, bh, bw), np.float64)
    sy = np.zeros((bd, bh, bw), np.float64)
    for _ in range(niter):
        t[cz, cy, cx] += 1.0
        for i in range(bd):
            for j in range(bh):
                for k in range(1, bw - 1):
                    sx[i, j, k] = t[i, j, k - 1] + t[i, j, k] + t[i, j, k + 1]
        for i in range(bd):
            for j in range(1, bh - 1):
                for k in range(1, bw - 1):
                    sy[i, j, k] = sx[i, j - 1, k] + sx[i, j, k] + sx[i, j + 1, k]
        for i in range(1, bd - 1):
            for j in range(1, bh - 1):
                for k in range(1, bw - 1):
                    s = sy[i - 1, j, k] + sy[i, j, k] + sy[i + 1, j, k]
                    t[i, j, k] = inside[i, j, k] * (s * _INV27)
    return t


@njit(cache=True, nogil=True)
def _centre3d(pix, lo, hi, mean, origin):  # pragma: no cover - numba
    """Box coordinates of the voxel nearest to the centroid (first in raster order on ties)."""
    best = np.inf
    c = np.zeros(3, np.int64)
    for q in range(lo, hi):
        dist = 0.0
        for a in range(3):
            dist += (pix[a, q] - mean[a]) ** 2
        if dist < best:
            best = dist
            for a in range(3):
                c[a] = pix[a, q] - origin[a]
    return c


@njit(parallel=True, cache=True, nogil=True)
def _diffuse_masks3d(counts, box, sums, offsets, pix, out, tol):  # pragma: no cover - numba
    n = counts.shape[0] - 1
    for k in prange(1, n + 1):
        cnt = counts[k]
        if cnt == 0:
            continue
        origin = np.empty(3, np.int64)
        ext = np.empty(3, np.int64)
        mean = np.empty(3, np.float64)
        for a in range(3):
            origin[a] = box[a, k] - 1
            ext[a] = box[a + 3, k] - box[a, k] + 1
            mean[a] = sums[a, k] / cnt
        inside = np.zeros((ext[0] + 2, ext[1] + 2, ext[2] + 2), np.float64)
        for q in range(offsets[k], offsets[k + 1]):
            inside[pix[0, q] - origin[0], pix[1, q] - origin[1], pix[2, q] - origin[2]] = 1.0
        c = _centre3d(pix, offsets[k], offsets[k + 1], mean, origin)
        heat = _heat_box3d(inside, c[0], c[1], c[2], 2 * (ext[0] + ext[1] + ext[2] + 2))
        for q in range(offsets[k], offsets[k + 1]):
            i = pix[0, q] - origin[0]
            j = pix[1, q] - origin[1]
            m = pix[2, q] - origin[2]
            gz = heat[i + 1, j, m] - heat[i - 1, j, m]
            gy = heat[i, j + 1, m] - heat[i, j - 1, m]
            gx = heat[i, j, m + 1] - heat[i, j, m - 1]
            mag = np.sqrt(gz * gz + gy * gy + gx * gx)
            if mag <= tol * heat[i, j, m]:
                mag = np.inf  # round-off at a symmetric centre: zero flow
            out[0, pix[0, q], pix[1, q], pix[2, q]] = gz / (1e-20 + mag)
            out[1, pix[0, q], pix[1, q], pix[2, q]] = gy / (1e-20 + mag)
            out[2, pix[0, q], pix[1, q], pix[2, q]] = gx / (1e-20 + mag)


def _check_volume(masks) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be a 3-D (Z, Y, X) label image, got shape {masks.shape}")
    return masks


def masks_to_flows_3d(masks: np.ndarray) -> np.ndarray:
    """Unit flows (dZ, dY, dX) that point each voxel of a mask to its mask's centre.

    Parameters
    ----------
    masks : ndarray
        Integer label volume ``(Z, Y, X)``, 0 = background. Labels need not be consecutive.

    Returns
    -------
    ndarray of float32, shape (3, Z, Y, X)
        Unit vectors inside masks, zeros on background (numba, one mask per thread).

    Examples
    --------
    >>> masks = np.zeros((7, 7, 7), np.uint16); masks[1:6, 1:6, 1:6] = 4
    >>> flows = masks_to_flows_3d(masks)
    >>> flows.shape, flows.dtype
    ((3, 7, 7, 7), dtype('float32'))
    >>> float(flows[0, 1, 3, 3]), float(flows[2, 3, 3, 5]), float(flows[:, 3, 3, 3].sum())
    (1.0, -1.0, 0.0)
    """
    masks = _check_volume(masks)
    lab, ids = consecutive_labels(masks)
    out = np.zeros((3, *masks.shape), np.float32)
    if len(ids) == 0:
        return out
    counts, box, sums, offsets, pix = _label_table3d(lab, len(ids))
    _diffuse_masks3d(counts, box, sums, offsets, pix, out, _GRAD_TOL[np.dtype(np.float64)])
    return out


def labels_to_flows_3d(labels: np.ndarray) -> np.ndarray:
    """Training targets of a label volume: [labels, cell probability, dZ, dY, dX].

    Parameters
    ----------
    labels : ndarray
        Integer label volume ``(Z, Y, X)``; renumbered to consecutive ids.

    Returns
    -------
    ndarray of float32, shape (5, Z, Y, X)

    Examples
    --------
    >>> lab = np.zeros((4, 6, 6), np.uint8); lab[1:3, 1:5, 1:5] = 9
    >>> out = labels_to_flows_3d(lab)
    >>> out.shape, float(out[0].max()), float(out[1].sum())
    ((5, 4, 6, 6), 1.0, 32.0)
    """
    lab, _ = consecutive_labels(_check_volume(labels))
    out = np.empty((5, *lab.shape), np.float32)
    out[0] = lab
    out[1] = lab > 0
    out[2:] = masks_to_flows_3d(lab)
    return out
