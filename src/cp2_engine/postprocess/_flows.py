"""Masks → flows: the one heat-diffusion algorithm of cp2 (see ``docs/flows.md``).

For each label, heat is injected at the mask pixel nearest to the centroid and diffused with an
absorbing boundary (only pixels of the same label average each other). The unit gradient of the
heat map is the flow that points every pixel towards its cell centre.

Two implementations of exactly the same algorithm:

* a numba CPU path that works on every mask's bounding box, one box per thread (``prange``);
* a vectorised torch path (CUDA / MPS, selectable on the CPU) that diffuses all masks at once on
  the whole image and averages only same-label neighbours.
"""

from __future__ import annotations

import logging

import numpy as np
from numba import njit, prange

logger = logging.getLogger(__name__)

# Gradients smaller than this fraction of the local heat are round-off (e.g. the exact centre of
# a symmetric mask); they become zero instead of a random unit vector.
_GRAD_TOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}
_NINE = 1.0 / 9.0


def consecutive_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber a label image to ``1..N`` (0 stays background).

    Parameters
    ----------
    labels : ndarray
        Integer (or bool) label image, 0 = background.

    Returns
    -------
    lab : ndarray of int32
        Labels renumbered to 1..N in increasing order of the original ids.
    ids : ndarray
        ``ids[k]`` is the original id of new label ``k + 1``.

    Examples
    --------
    >>> lab, ids = consecutive_labels(np.array([[0, 7], [3, 7]]))
    >>> lab.tolist(), ids.tolist()
    ([[0, 2], [1, 2]], [3, 7])
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer or bool array, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be >= 0 (0 = background)")
    top = int(labels.max()) if labels.size else 0
    if top <= 4 * labels.size + 16:
        present = np.bincount(labels.ravel(), minlength=top + 1) > 0
        present[0] = False
        lut = np.cumsum(present, dtype=np.int64).astype(np.int32)
        lut[~present] = 0
        return lut[labels], np.flatnonzero(present)
    ids, inverse = np.unique(labels, return_inverse=True)
    lab = inverse.reshape(labels.shape).astype(np.int32)
    if ids[0] != 0:
        return lab + 1, ids
    return lab, ids[1:]


@njit(cache=True, nogil=True)
def _label_table(lab, n):  # pragma: no cover - numba
    """Per-label counts, bounding boxes, coordinate sums and raster-ordered pixel lists."""
    h, w = lab.shape
    counts = np.zeros(n + 1, np.int64)
    box = np.empty((4, n + 1), np.int64)  # ymin, xmin, ymax, xmax
    box[0, :] = h
    box[1, :] = w
    box[2, :] = -1
    box[3, :] = -1
    sums = np.zeros((2, n + 1), np.int64)
    for y in range(h):
        for x in range(w):
            k = lab[y, x]
            if k > 0:
                counts[k] += 1
                box[0, k] = min(box[0, k], y)
                box[1, k] = min(box[1, k], x)
                box[2, k] = max(box[2, k], y)
                box[3, k] = max(box[3, k], x)
                sums[0, k] += y
                sums[1, k] += x
    offsets = np.zeros(n + 2, np.int64)
    for k in range(1, n + 1):
        offsets[k + 1] = offsets[k] + counts[k]
    fill = offsets.copy()
    pix = np.empty((2, offsets[n + 1]), np.int32)
    for y in range(h):
        for x in range(w):
            k = lab[y, x]
            if k > 0:
                pix[0, fill[k]] = y
                pix[1, fill[k]] = x
                fill[k] += 1
    return counts, box, sums, offsets, pix


@njit(cache=True, nogil=True)
def _heat_box(inside, cy, cx, niter):  # pragma: no cover - numba
    """Jacobi heat diffusion on one padded box; ``inside`` is 1.0 on the mask, else 0.0."""
    bh, bw = inside.shape
    t_cur = np.zeros((bh, bw), np.float64)
    t_new = np.zeros((bh, bw), np.float64)
    for _ in range(niter):
        t_cur[cy, cx] += 1.0
        for i in range(1, bh - 1):
            for j in range(1, bw - 1):
                s = (
                    t_cur[i - 1, j - 1]
                    + t_cur[i - 1, j]
                    + t_cur[i - 1, j + 1]
                    + t_cur[i, j - 1]
                    + t_cur[i, j]
                    + t_cur[i, j + 1]
                    + t_cur[i + 1, j - 1]
                    + t_cur[i + 1, j]
                    + t_cur[i + 1, j + 1]
                )
                t_new[i, j] = inside[i, j] * (s * _NINE)
        t_cur, t_new = t_new, t_cur
    return t_cur


@njit(parallel=True, cache=True, nogil=True)
def _diffuse_masks(counts, box, sums, offsets, pix, out, dp, err, tol):  # pragma: no cover
    """Unit flows of every mask into a non-empty ``out``; with a non-empty ``dp`` also errors."""
    n = counts.shape[0] - 1
    with_err = dp.shape[1] > 0
    with_out = out.shape[1] > 0
    for k in prange(1, n + 1):
        cnt = counts[k]
        if cnt == 0:
            continue
        y0 = box[0, k] - 1
        x0 = box[1, k] - 1
        hk = box[2, k] - box[0, k] + 1
        wk = box[3, k] - box[1, k] + 1
        inside = np.zeros((hk + 2, wk + 2), np.float64)
        my = sums[0, k] / cnt
        mx = sums[1, k] / cnt
        best = np.inf
        cy = 0
        cx = 0
        for q in range(offsets[k], offsets[k + 1]):
            yy = pix[0, q]
            xx = pix[1, q]
            inside[yy - y0, xx - x0] = 1.0
            d = (yy - my) ** 2 + (xx - mx) ** 2
            if d < best:
                best = d
                cy = yy - y0
                cx = xx - x0
        heat = _heat_box(inside, cy, cx, 2 * (hk + wk + 4))
        acc = 0.0
        for q in range(offsets[k], offsets[k + 1]):
            yy = pix[0, q]
            xx = pix[1, q]
            i = yy - y0
            j = xx - x0
            gy = heat[i + 1, j] - heat[i - 1, j]
            gx = heat[i, j + 1] - heat[i, j - 1]
            mag = np.sqrt(gy * gy + gx * gx)
            if mag <= tol * heat[i, j]:
                gy = 0.0
                gx = 0.0
            uy = gy / (1e-20 + mag)
            ux = gx / (1e-20 + mag)
            if with_out:
                out[0, yy, xx] = uy
                out[1, yy, xx] = ux
            if with_err:
                ey = uy - np.float64(dp[0, yy, xx] / np.float32(5.0))
                ex = ux - np.float64(dp[1, yy, xx] / np.float32(5.0))
                acc += ey * ey + ex * ex
        if with_err:
            err[k] = acc / cnt


def _check_masks(masks) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 2:
        raise ValueError(f"masks must be a 2D (H, W) label image, got shape {masks.shape}")
    return masks


def _numba_flows(lab: np.ndarray, n: int, dp: np.ndarray | None = None):
    """Run the numba path on consecutive labels.

    Returns the flows (float32, or None when ``dp`` is given: only the errors are wanted) and
    the per-label flow errors against ``dp / 5`` (NaN without ``dp``).
    """
    counts, box, sums, offsets, pix = _label_table(lab, n)
    out = np.zeros((2, *lab.shape) if dp is None else (2, 0, 0), np.float32)
    err = np.full(n + 1, np.nan)
    dp_arr = np.zeros((2, 0, 0), np.float32) if dp is None else np.asarray(dp, np.float32)
    tol = _GRAD_TOL[np.dtype(np.float64)]
    _diffuse_masks(counts, box, sums, offsets, pix, out, dp_arr, err, tol)
    return (out if dp is None else None), err[1:]


def mask_centres(lab: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diffusion source and iteration count of each mask (vectorised numpy).

    Parameters
    ----------
    lab : ndarray
        Consecutive labels 1..n (see :func:`consecutive_labels`).
    n : int
        Number of labels.

    Returns
    -------
    cy, cx : ndarray of int64
        The mask pixel nearest to each centroid (first in raster order on ties), shape (n,).
    niter : ndarray of int64
        ``2 * (h + w + 4)`` with the bounding-box extent h, w of each mask (as Cellpose 3's
        CPU path).

    Examples
    --------
    >>> lab = np.zeros((5, 5), int); lab[1:4, 1:4] = 1
    >>> cy, cx, niter = mask_centres(lab, 1)
    >>> int(cy[0]), int(cx[0]), int(niter[0])
    (2, 2, 20)
    """
    flat = np.flatnonzero(lab)
    k = lab.ravel()[flat].astype(np.int64)
    y, x = np.divmod(flat, lab.shape[1])
    cnt = np.bincount(k, minlength=n + 1)[1:]
    cnt_safe = np.maximum(cnt, 1)
    my = np.bincount(k, weights=y, minlength=n + 1)[1:] / cnt_safe
    mx = np.bincount(k, weights=x, minlength=n + 1)[1:] / cnt_safe
    dist = (y - my[k - 1]) ** 2 + (x - mx[k - 1]) ** 2
    order = np.lexsort((flat, dist, k))  # by label, then distance, then raster index
    first = order[np.searchsorted(k[order], np.arange(1, n + 1))]
    big = np.iinfo(np.int64).max
    ext_y = _extent(k, y, n, big)
    ext_x = _extent(k, x, n, big)
    return y[first], x[first], 2 * (ext_y + ext_x + 4)


def _extent(k, v, n, big):
    lo = np.full(n + 1, big, np.int64)
    hi = np.full(n + 1, -1, np.int64)
    np.minimum.at(lo, k, v)
    np.maximum.at(hi, k, v)
    return (hi - lo + 1)[1:]


def _torch_flows(lab: np.ndarray, n: int, device) -> np.ndarray:
    """Vectorised torch path: all masks diffuse together; only same-label neighbours average."""
    import torch

    dtype = torch.float32 if device.type == "mps" else torch.float64
    tol = _GRAD_TOL[np.dtype(np.float32 if dtype == torch.float32 else np.float64)]
    h, w = lab.shape
    cy, cx, niter = mask_centres(lab, n)
    padded = torch.from_numpy(np.pad(lab, 1).astype(np.int64)).to(device)
    core = padded[1:-1, 1:-1]
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    same = {
        s: (padded[1 + s[0] : h + 1 + s[0], 1 + s[1] : w + 1 + s[1]] == core) & (core > 0)
        for s in shifts
    }
    lut = torch.from_numpy(np.concatenate([[0], niter])).to(device)
    niter_pix = lut[core]
    src = torch.from_numpy((cy + 1) * (w + 2) + (cx + 1)).to(device)
    src_iter = torch.from_numpy(niter).to(device)
    heat = torch.zeros((h + 2, w + 2), dtype=dtype, device=device)
    flat = heat.view(-1)
    for t in range(int(niter.max())):
        flat.index_add_(0, src, (src_iter > t).to(dtype))
        total = heat[1:-1, 1:-1].clone()
        for (dy, dx), ok in same.items():
            total += heat[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx] * ok
        heat[1:-1, 1:-1] = torch.where(niter_pix > t, total * _NINE, heat[1:-1, 1:-1])
    gy = heat[2:, 1:-1] * same[(1, 0)] - heat[:-2, 1:-1] * same[(-1, 0)]
    gx = heat[1:-1, 2:] * same[(0, 1)] - heat[1:-1, :-2] * same[(0, -1)]
    mag = torch.sqrt(gy * gy + gx * gx)
    keep = (mag > tol * heat[1:-1, 1:-1]).to(dtype)
    flows = torch.stack((gy * keep, gx * keep)) / (1e-20 + mag * keep)
    return flows.to(torch.float32).cpu().numpy()


def masks_to_flows(masks: np.ndarray, *, device=None) -> np.ndarray:
    """Compute unit flows (dY, dX) that point each mask pixel to its mask's centre.

    Parameters
    ----------
    masks : ndarray
        Integer label image ``(H, W)``, 0 = background. Labels need not be consecutive.
    device : str or torch.device, optional
        None or ``"cpu"`` uses the numba CPU path. ``"cuda"`` / ``"mps"`` (or a
        ``torch.device``, including ``torch.device("cpu")``) use the vectorised torch path, which
        gives the same flows.

    Returns
    -------
    ndarray of float32, shape (2, H, W)
        Unit vectors inside masks, zeros on background.

    Examples
    --------
    >>> masks = np.zeros((7, 7), np.uint16); masks[1:6, 1:6] = 3
    >>> flows = masks_to_flows(masks)
    >>> flows.shape, flows.dtype
    ((2, 7, 7), dtype('float32'))
    >>> float(flows[0, 1, 3]), float(flows[1, 3, 5])
    (1.0, -1.0)
    """
    masks = _check_masks(masks)
    lab, ids = consecutive_labels(masks)
    n = len(ids)
    if n == 0:
        return np.zeros((2, *masks.shape), np.float32)
    if device is None or (isinstance(device, str) and device == "cpu"):
        return _numba_flows(lab, n)[0]
    from cp2_engine.network import resolve_device

    return _torch_flows(lab, n, resolve_device(device))


def labels_to_flows(labels: np.ndarray, *, device=None) -> np.ndarray:
    """Stack the training targets of a label image: [labels, cell probability, dY, dX].

    Parameters
    ----------
    labels : ndarray
        Integer label image ``(H, W)``; renumbered to consecutive ids.
    device : str or torch.device, optional
        Passed to :func:`masks_to_flows`.

    Returns
    -------
    ndarray of float32, shape (4, H, W)
        Consecutive labels, ``labels > 0`` as 0/1, and the unit flows.

    Examples
    --------
    >>> lab = np.zeros((6, 6), np.uint8); lab[1:5, 1:5] = 9
    >>> out = labels_to_flows(lab)
    >>> out.shape, float(out[0].max()), float(out[1].sum())
    ((4, 6, 6), 1.0, 16.0)
    """
    labels = _check_masks(labels)
    lab, _ = consecutive_labels(labels)
    flows = masks_to_flows(lab, device=device)
    out = np.empty((4, *lab.shape), np.float32)
    out[0] = lab
    out[1] = lab > 0
    out[2:] = flows
    return out
