"""Flow dynamics: Euler integration of pixels along the flow field and histogram clustering.

``follow_flows`` moves every foreground pixel ``niter`` times along the bilinearly interpolated
flow field (positions clamped to the image). Positions are float32 and the bilinear sum follows
the reference implementation's order and precision, so final positions match it bit for bit. A
trajectory that comes back to a position it held one or two steps earlier is periodic from then
on, so its final position is known exactly and the integration stops early.

``get_masks`` clusters the final positions: seeds are local maxima of the 1-pixel histogram,
grown into dense neighbouring bins, and every pixel takes the label of the region that holds its
final position.
"""

from __future__ import annotations

import logging

import numpy as np
from numba import njit, prange

logger = logging.getLogger(__name__)

_SEED_MIN_COUNT = 10  # a seed bin holds more than this many final positions
_GROW_MIN_COUNT = 2  # growth enters bins holding more than this many
_GROW_STEPS = 5
_SEED_RADIUS = 2  # 5x5 local maximum
_LANES = 4  # trajectories integrated side by side in one thread
_CHUNK = 4096  # pixels per parallel task


@njit(cache=True, nogil=True, inline="always")
def _bilinear(dp, c, yf, xf, yf1, xf1, fy, fx):  # pragma: no cover - numba
    # float32 fractions; (1 - f) and the sum in float64; y-only products stay float32. This is
    # the reference's exact evaluation order and precision, kept for bit-identical positions.
    gy = 1.0 - np.float64(fy)
    gx = 1.0 - np.float64(fx)
    return np.float32(
        np.float64(dp[c, yf, xf]) * gy * gx
        + np.float64(dp[c, yf, xf1]) * gy * np.float64(fx)
        + np.float64(dp[c, yf1, xf] * fy) * gx
        + np.float64(dp[c, yf1, xf1] * fy * fx)
    )


@njit(cache=True, nogil=True)
def _step(dp, py, px, hm1, wm1):  # pragma: no cover - numba
    """One Euler step from float32 position (py, px) with edge-clamped bilinear sampling."""
    h = dp.shape[1]
    w = dp.shape[2]
    y0 = np.int64(py)
    x0 = np.int64(px)
    fy = py - np.float32(y0)
    fx = px - np.float32(x0)
    yf = min(h - 1, max(0, y0))
    xf = min(w - 1, max(0, x0))
    yf1 = min(h - 1, yf + 1)
    xf1 = min(w - 1, xf + 1)
    vy = _bilinear(dp, 0, yf, xf, yf1, xf1, fy, fx)
    vx = _bilinear(dp, 1, yf, xf, yf1, xf1, fy, fx)
    ny = min(hm1, max(np.float32(0.0), py + vy))
    nx = min(wm1, max(np.float32(0.0), px + vx))
    return ny, nx


@njit(cache=True, nogil=True)
def _euler_chunk(dp, ys, xs, niter, out, start, end):  # pragma: no cover - numba
    """Integrate pixels start..end, ``_LANES`` independent trajectories interleaved (for ILP)."""
    hm1 = np.float32(dp.shape[1] - 1)
    wm1 = np.float32(dp.shape[2] - 1)
    pos = np.empty((4, _LANES), np.float32)  # y, x, and the position one step earlier
    idx = np.full(_LANES, -1, np.int64)
    steps = np.zeros(_LANES, np.int64)
    nxt = start
    for b in range(_LANES):
        if nxt < end:
            idx[b] = nxt
            nxt += 1
    for b in range(_LANES):
        if idx[b] >= 0:
            pos[0, b], pos[1, b], pos[2, b], pos[3, b] = ys[idx[b]], xs[idx[b]], -1.0, -1.0
    active = min(_LANES, end - start)
    while active > 0:
        for b in range(_LANES):
            q = idx[b]
            if q < 0:
                continue
            py, px = pos[0, b], pos[1, b]
            if steps[b] >= niter:
                ny, nx = py, px
                done = True
            else:
                ny, nx = _step(dp, py, px, hm1, wm1)
                done = steps[b] + 1 >= niter or (ny == py and nx == px)
                if not done and ny == pos[2, b] and nx == pos[3, b]:
                    done = True  # period 2: positions alternate from now on
                    if (niter - steps[b] - 1) % 2 == 1:
                        ny, nx = py, px
            if not done:
                pos[0, b], pos[1, b], pos[2, b], pos[3, b] = ny, nx, py, px
                steps[b] += 1
                continue
            out[0, q] = ny
            out[1, q] = nx
            if nxt < end:
                idx[b] = nxt
                pos[0, b], pos[1, b], pos[2, b], pos[3, b] = ys[nxt], xs[nxt], -1.0, -1.0
                steps[b] = 0
                nxt += 1
            else:
                idx[b] = -1
                active -= 1


@njit(parallel=True, cache=True, nogil=True)
def _euler(dp, ys, xs, niter, out):  # pragma: no cover - numba
    n = ys.shape[0]
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(n_chunks):
        _euler_chunk(dp, ys, xs, niter, out, c * _CHUNK, min(n, (c + 1) * _CHUNK))


def _check_field(dP, mask) -> tuple[np.ndarray, np.ndarray]:
    dP = np.asarray(dP)
    mask = np.asarray(mask)
    if dP.ndim != 3 or dP.shape[0] != 2:
        raise ValueError(f"dP must have shape (2, H, W) = (dY, dX), got {dP.shape}")
    if mask.shape != dP.shape[1:]:
        raise ValueError(f"mask must have shape {dP.shape[1:]} like dP, got {mask.shape}")
    return np.ascontiguousarray(dP, dtype=np.float32), mask.astype(bool, copy=False)


def follow_flows(dP: np.ndarray, mask: np.ndarray, *, niter: int = 200) -> np.ndarray:
    """Move every pixel of ``mask`` ``niter`` Euler steps along the flow field ``dP``.

    Parameters
    ----------
    dP : ndarray, shape (2, H, W)
        Step field (dY, dX) in pixels per step, e.g. network flows ``* foreground / 5``.
    mask : ndarray of bool, shape (H, W)
        Pixels to integrate.
    niter : int
        Number of Euler steps.

    Returns
    -------
    ndarray of float32, shape (2, N)
        Final (y, x) positions of the ``N`` mask pixels, in raster order of ``mask``.

    Examples
    --------
    >>> dP = np.zeros((2, 4, 5), np.float32); dP[1] = 1.0
    >>> mask = np.zeros((4, 5), bool); mask[2, 0] = True
    >>> follow_flows(dP, mask, niter=3).tolist()
    [[2.0], [3.0]]
    """
    dP, mask = _check_field(dP, mask)
    if int(niter) != niter or niter < 0:
        raise ValueError(f"niter must be a non-negative integer, got {niter!r}")
    ys, xs = np.nonzero(mask)
    out = np.empty((2, ys.size), np.float32)
    _euler(dP, ys.astype(np.int32), xs.astype(np.int32), int(niter), out)
    return out


@njit(cache=True, nogil=True)
def _histogram(iy, ix, h, w):  # pragma: no cover - numba
    hist = np.zeros((h, w), np.int32)
    for q in range(iy.shape[0]):
        hist[iy[q], ix[q]] += 1
    return hist


@njit(cache=True, nogil=True)
def _find_seeds(hist, rad, min_count):  # pragma: no cover - numba
    """Bins with count > min_count that equal the maximum of their (2 rad + 1)^2 window."""
    h, w = hist.shape
    seeds = []
    for y in range(h):
        for x in range(w):
            v = hist[y, x]
            if v <= min_count:
                continue
            is_max = True
            for yy in range(max(0, y - rad), min(h, y + rad + 1)):
                for xx in range(max(0, x - rad), min(w, x + rad + 1)):
                    if hist[yy, xx] > v:
                        is_max = False
            if is_max:
                seeds.append(y * w + x)
    return np.array(seeds, dtype=np.int64)


@njit(cache=True, nogil=True)
def _grow_seeds(hist, seeds, steps, min_count):  # pragma: no cover - numba
    """Paint each seed's region (``steps`` 3x3 dilations inside bins > min_count), in order."""
    h, w = hist.shape
    side = 2 * steps + 1
    regions = np.zeros((h, w), np.int32)
    cur = np.zeros((side, side), np.bool_)
    nxt = np.zeros((side, side), np.bool_)
    for k in range(seeds.shape[0]):
        sy = seeds[k] // w - steps
        sx = seeds[k] % w - steps
        cur[:] = False
        cur[steps, steps] = True
        for _ in range(steps):
            for i in range(side):
                for j in range(side):
                    y = sy + i
                    x = sx + j
                    hit = False
                    if 0 <= y < h and 0 <= x < w and hist[y, x] > min_count:
                        for di in range(max(0, i - 1), min(side, i + 2)):
                            for dj in range(max(0, j - 1), min(side, j + 2)):
                                hit = hit or cur[di, dj]
                    nxt[i, j] = hit
            cur, nxt = nxt, cur
        for i in range(side):
            for j in range(side):
                if cur[i, j]:
                    regions[sy + i, sx + j] = k + 1
    return regions


def _label_dtype(n: int):
    return np.uint16 if n < 2**16 else np.uint32


def get_masks(
    p: np.ndarray, mask: np.ndarray, *, shape: tuple[int, int], max_size_fraction: float = 0.4
) -> np.ndarray:
    """Cluster final pixel positions into labelled masks.

    Parameters
    ----------
    p : ndarray, shape (2, N)
        Final (y, x) positions from :func:`follow_flows` for the pixels of ``mask``.
    mask : ndarray of bool, shape (H, W)
        The pixels that were integrated (their raster order matches ``p``).
    shape : tuple of int
        ``(H, W)``, the image shape.
    max_size_fraction : float
        Masks holding more than this fraction of the image's pixels are dropped.

    Returns
    -------
    ndarray of uint16 (uint32 above 65535 masks), shape (H, W)
        Consecutive labels, 0 = background.

    Notes
    -----
    Histogram of positions truncated to integers (1-pixel bins). Seeds are bins with more than
    10 positions that are the maximum of their 5x5 neighbourhood; seeds are processed from the
    smallest count to the largest (ties in raster order) and each grows 5 times into 3x3
    neighbours holding more than 2 positions, a later seed overwriting an earlier one.

    Examples
    --------
    >>> mask = np.zeros((20, 20), bool); mask[2:8, 2:8] = True; mask[12:18, 12:18] = True
    >>> ys, xs = np.nonzero(mask)
    >>> p = np.where(ys < 10, 5.0, 15.0)[None].repeat(2, 0).astype(np.float32)
    >>> labels = get_masks(p, mask, shape=(20, 20))
    >>> int(labels.max()), int((labels == labels[3, 3]).sum())
    (2, 36)
    """
    shape = tuple(int(s) for s in shape)
    mask = np.asarray(mask, dtype=bool)
    p = np.asarray(p)
    if len(shape) != 2 or mask.shape != shape:
        raise ValueError(f"mask must have the given shape (H, W) {shape}, got {mask.shape}")
    n_pix = int(mask.sum())
    if p.shape != (2, n_pix):
        raise ValueError(
            f"p must have shape (2, {n_pix}) (one column per mask pixel), got {p.shape}"
        )
    labels = np.zeros(shape, np.uint16)
    if n_pix == 0:
        return labels
    iy = np.clip(p[0], 0, shape[0] - 1).astype(np.int64)
    ix = np.clip(p[1], 0, shape[1] - 1).astype(np.int64)
    hist = _histogram(iy, ix, *shape)
    seeds = _find_seeds(hist, _SEED_RADIUS, _SEED_MIN_COUNT)
    if seeds.size == 0:
        logger.info("no histogram seeds: no masks found")
        return labels
    order = np.argsort(hist.ravel()[seeds], kind="stable")
    regions = _grow_seeds(hist, seeds[order], _GROW_STEPS, _GROW_MIN_COUNT)
    pix_labels = regions[iy, ix]
    counts = np.bincount(pix_labels, minlength=seeds.size + 1)
    keep = counts > 0
    keep[0] = False
    keep &= counts <= max_size_fraction * shape[0] * shape[1]
    lut = np.cumsum(keep)
    lut[~keep] = 0
    n = int(lut[-1])
    labels = labels.astype(_label_dtype(n), copy=False)
    labels[mask] = lut[pix_labels]
    return labels
