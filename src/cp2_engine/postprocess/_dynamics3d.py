"""Flow dynamics in 3-D: Euler integration with trilinear sampling, and histogram clustering.

The 2-D algorithm of ``_dynamics.py`` with one more axis:

* ``follow_flows_3d`` moves every foreground voxel ``niter`` times along the trilinearly
  interpolated flow field (float32 positions clamped to the volume). A trajectory that comes
  back to the position it held one or two steps earlier is periodic from then on, so its final
  position is known and the integration stops early (same result, fewer steps).
* ``get_masks_3d`` clusters the final positions: 1-voxel histogram, seeds are bins with more than
  10 positions that equal the maximum of their 5×5×5 neighbourhood, processed from the smallest
  count to the largest; each grows 5 times into 3×3×3 neighbours holding more than 2 positions
  (inside an 11×11×11 window), a later seed overwriting an earlier one; every voxel takes the
  label of the region that holds its final position. This is Cellpose 3.1's ``get_masks_torch``.

Cellpose 3.1 integrates 3-D flows with ``torch.grid_sample`` (``align_corners=False`` on
coordinates normalised with ``L - 1``, so it samples up to half a voxel away from the position
and reads zeros past the edges); cp2 samples at the position itself, like its 2-D path.
"""

from __future__ import annotations

import logging

import numpy as np
from numba import njit, prange

from cp2_engine.postprocess._dynamics import (
    _GROW_MIN_COUNT,
    _GROW_STEPS,
    _SEED_MIN_COUNT,
    _SEED_RADIUS,
    _label_dtype,
)

logger = logging.getLogger(__name__)

_CHUNK = 2048  # voxels per parallel task
_LANES = 8  # trajectories stepped together in one loop


@njit(cache=True, nogil=True, inline="always")
def _corners(dp, c, z0, z1, y0, y1, x0, x1, w000, w001, w010, w011, w100, w101, w110, w111):
    """Weighted sum of channel ``c`` over the 8 corners (weights 0 off the foreground)."""
    # summed as a tree (depth 3, not 7): the step is a serial chain, so its latency counts
    return (
        (w000 * dp[c, z0, y0, x0] + w001 * dp[c, z0, y0, x1])
        + (w010 * dp[c, z0, y1, x0] + w011 * dp[c, z0, y1, x1])
    ) + (
        (w100 * dp[c, z1, y0, x0] + w101 * dp[c, z1, y0, x1])
        + (w110 * dp[c, z1, y1, x0] + w111 * dp[c, z1, y1, x1])
    )


@njit(cache=True, nogil=True)
def _step3d(dp, fg, div, pz, py, px, lim):  # pragma: no cover - numba
    """One Euler step from float32 (pz, py, px): edge-clamped trilinear sampling of
    ``dp * fg / div`` (corners outside ``fg`` read 0), the sum divided once by ``div``."""
    d, h, w = dp.shape[1], dp.shape[2], dp.shape[3]
    z0 = min(d - 1, max(0, np.int64(pz)))
    y0 = min(h - 1, max(0, np.int64(py)))
    x0 = min(w - 1, max(0, np.int64(px)))
    z1 = min(d - 1, z0 + 1)
    y1 = min(h - 1, y0 + 1)
    x1 = min(w - 1, x0 + 1)
    fz = pz - np.float32(z0)
    fy = py - np.float32(y0)
    fx = px - np.float32(x0)
    gz = np.float32(1.0) - fz
    gy = np.float32(1.0) - fy
    gx = np.float32(1.0) - fx
    zero = np.float32(0.0)
    w000 = gz * gy * gx if fg[z0, y0, x0] else zero
    w001 = gz * gy * fx if fg[z0, y0, x1] else zero
    w010 = gz * fy * gx if fg[z0, y1, x0] else zero
    w011 = gz * fy * fx if fg[z0, y1, x1] else zero
    w100 = fz * gy * gx if fg[z1, y0, x0] else zero
    w101 = fz * gy * fx if fg[z1, y0, x1] else zero
    w110 = fz * fy * gx if fg[z1, y1, x0] else zero
    w111 = fz * fy * fx if fg[z1, y1, x1] else zero
    vz = _corners(dp, 0, z0, z1, y0, y1, x0, x1, w000, w001, w010, w011, w100, w101, w110, w111)
    vy = _corners(dp, 1, z0, z1, y0, y1, x0, x1, w000, w001, w010, w011, w100, w101, w110, w111)
    vx = _corners(dp, 2, z0, z1, y0, y1, x0, x1, w000, w001, w010, w011, w100, w101, w110, w111)
    nz = min(lim[0], max(zero, pz + vz / div))
    ny = min(lim[1], max(zero, py + vy / div))
    nx = min(lim[2], max(zero, px + vx / div))
    return nz, ny, nx


@njit(cache=True, nogil=True)
def _euler3d_chunk(dp, fg, div, zs, ys, xs, niter, out, start, end):  # pragma: no cover - numba
    """Integrate voxels ``start:end``, ``_LANES`` trajectories at a time.

    One step is a serial chain (position -> corners -> sum -> position), so stepping several
    independent trajectories in one loop lets the CPU overlap their latencies (about 1.3x here).
    Each trajectory stops at a fixed point or a period-2 cycle exactly as if alone.
    """
    lim = np.empty(3, np.float32)
    for a in range(3):
        lim[a] = np.float32(dp.shape[a + 1] - 1)
    pos = np.empty((_LANES, 3), np.float32)
    old = np.empty((_LANES, 3), np.float32)
    done = np.empty(_LANES, np.bool_)
    for base in range(start, end, _LANES):
        m = min(_LANES, end - base)
        for lane in range(_LANES):
            done[lane] = lane >= m
            if lane < m:
                pos[lane, 0], pos[lane, 1], pos[lane, 2] = (
                    zs[base + lane],
                    ys[base + lane],
                    xs[base + lane],
                )
            old[lane, :] = -1.0
        for t in range(niter):
            alive = False
            for lane in range(_LANES):
                if done[lane]:
                    continue
                pz, py, px = pos[lane, 0], pos[lane, 1], pos[lane, 2]
                nz, ny, nx = _step3d(dp, fg, div, pz, py, px, lim)
                if nz == pz and ny == py and nx == px:
                    done[lane] = True  # fixed point
                    continue
                if nz == old[lane, 0] and ny == old[lane, 1] and nx == old[lane, 2]:
                    done[lane] = True  # period 2: the final position depends on the parity left
                    if (niter - t - 1) % 2 == 0:
                        pos[lane, 0], pos[lane, 1], pos[lane, 2] = nz, ny, nx
                    continue
                old[lane, 0], old[lane, 1], old[lane, 2] = pz, py, px
                pos[lane, 0], pos[lane, 1], pos[lane, 2] = nz, ny, nx
                alive = True
            if not alive:
                break
        for lane in range(m):
            for a in range(3):
                out[a, base + lane] = pos[lane, a]


@njit(parallel=True, cache=True, nogil=True)
def _euler3d(dp, fg, div, zs, ys, xs, niter, out):  # pragma: no cover - numba
    n = zs.shape[0]
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(n_chunks):
        _euler3d_chunk(dp, fg, div, zs, ys, xs, niter, out, c * _CHUNK, min(n, (c + 1) * _CHUNK))


def _follow(dP: np.ndarray, mask: np.ndarray, fg: np.ndarray, niter: int, div: float):
    zs, ys, xs = (a.astype(np.int32) for a in np.nonzero(mask))
    out = np.empty((3, zs.size), np.float32)
    dp = np.ascontiguousarray(dP, dtype=np.float32)
    _euler3d(dp, np.ascontiguousarray(fg, dtype=bool), np.float32(div), zs, ys, xs, niter, out)
    return out


def follow_masked_flows_3d(flows: np.ndarray, fg: np.ndarray, *, niter: int = 200) -> np.ndarray:
    """:func:`follow_flows_3d` on the step field ``flows * fg / 5`` without building it.

    The network's flows are 5× unit vectors; the step field of Cellpose's dynamics is zero off
    the foreground ``fg`` and ``flows / 5`` on it. Sampling that field corner by corner (a corner
    outside ``fg`` reads 0) saves three passes over the whole volume. Returns the final positions
    of the voxels of ``fg``.

    Examples
    --------
    >>> flows = np.zeros((3, 3, 4, 5), np.float32); flows[2] = 5.0
    >>> fg = np.zeros((3, 4, 5), bool); fg[1, 2, :3] = True
    >>> follow_masked_flows_3d(flows, fg, niter=5)[2].tolist()  # one voxel past fg: field 0
    [3.0, 3.0, 3.0]
    """
    _check_field(flows, fg, niter)
    return _follow(flows, fg, fg, int(niter), 5.0)


def _check_field(dP, mask, niter) -> None:
    if dP.ndim != 4 or dP.shape[0] != 3:
        raise ValueError(f"dP must have shape (3, Z, Y, X) = (dZ, dY, dX), got {dP.shape}")
    if mask.shape != dP.shape[1:]:
        raise ValueError(f"mask must have shape {dP.shape[1:]} like dP, got {mask.shape}")
    if int(niter) != niter or niter < 0:
        raise ValueError(f"niter must be a non-negative integer, got {niter!r}")


def follow_flows_3d(dP: np.ndarray, mask: np.ndarray, *, niter: int = 200) -> np.ndarray:
    """Move every voxel of ``mask`` ``niter`` Euler steps along the flow field ``dP``.

    Parameters
    ----------
    dP : ndarray, shape (3, Z, Y, X)
        Step field (dZ, dY, dX) in voxels per step, e.g. network flows ``* foreground / 5``.
    mask : ndarray of bool, shape (Z, Y, X)
        Voxels to integrate.
    niter : int
        Number of Euler steps.

    Returns
    -------
    ndarray of float32, shape (3, N)
        Final (z, y, x) positions of the ``N`` mask voxels, in raster order of ``mask``.

    Examples
    --------
    >>> dP = np.zeros((3, 3, 4, 5), np.float32); dP[2] = 1.0
    >>> mask = np.zeros((3, 4, 5), bool); mask[1, 2, 0] = True
    >>> follow_flows_3d(dP, mask, niter=3).tolist()
    [[1.0], [2.0], [3.0]]
    """
    dP = np.asarray(dP)
    mask = np.asarray(mask)
    _check_field(dP, mask, niter)
    everywhere = np.ones(mask.shape, bool)
    return _follow(dP, mask, everywhere, int(niter), 1.0)


@njit(cache=True, nogil=True)
def _histogram3d(iz, iy, ix, d, h, w):  # pragma: no cover - numba
    hist = np.zeros((d, h, w), np.int32)
    for q in range(iz.shape[0]):
        hist[iz[q], iy[q], ix[q]] += 1
    return hist


@njit(cache=True, nogil=True)
def _find_seeds3d(hist, rad, min_count):  # pragma: no cover - numba
    """Flat indices of bins with count > min_count equal to the max of their (2 rad + 1)^3."""
    d, h, w = hist.shape
    seeds = []
    for z in range(d):
        for y in range(h):
            for x in range(w):
                v = hist[z, y, x]
                if v <= min_count:
                    continue
                is_max = True
                for zz in range(max(0, z - rad), min(d, z + rad + 1)):
                    for yy in range(max(0, y - rad), min(h, y + rad + 1)):
                        for xx in range(max(0, x - rad), min(w, x + rad + 1)):
                            if hist[zz, yy, xx] > v:
                                is_max = False
                if is_max:
                    seeds.append((z * h + y) * w + x)
    return np.array(seeds, dtype=np.int64)


@njit(cache=True, nogil=True)
def _dilate_once(hist, cur, nxt, s0, min_count):  # pragma: no cover - numba
    """``nxt`` = 3×3×3 dilation of ``cur`` restricted to in-volume bins with count > min."""
    d, h, w = hist.shape
    side = cur.shape[0]
    for i in range(side):
        for j in range(side):
            for m in range(side):
                z, y, x = s0[0] + i, s0[1] + j, s0[2] + m
                hit = False
                if 0 <= z < d and 0 <= y < h and 0 <= x < w and hist[z, y, x] > min_count:
                    for a in range(max(0, i - 1), min(side, i + 2)):
                        for b in range(max(0, j - 1), min(side, j + 2)):
                            for c in range(max(0, m - 1), min(side, m + 2)):
                                hit = hit or cur[a, b, c]
                nxt[i, j, m] = hit


@njit(cache=True, nogil=True)
def _grow_seeds3d(hist, seeds, steps, min_count):  # pragma: no cover - numba
    """Paint each seed's region (``steps`` dilations inside bins > min_count), in order."""
    d, h, w = hist.shape
    side = 2 * steps + 1
    regions = np.zeros((d, h, w), np.int32)
    cur = np.zeros((side, side, side), np.bool_)
    nxt = np.zeros((side, side, side), np.bool_)
    s0 = np.empty(3, np.int64)
    for k in range(seeds.shape[0]):
        s0[0] = seeds[k] // (h * w) - steps
        s0[1] = (seeds[k] // w) % h - steps
        s0[2] = seeds[k] % w - steps
        cur[:] = False
        cur[steps, steps, steps] = True
        for _ in range(steps):
            _dilate_once(hist, cur, nxt, s0, min_count)
            cur, nxt = nxt, cur
        for i in range(side):
            for j in range(side):
                for m in range(side):
                    if cur[i, j, m]:
                        regions[s0[0] + i, s0[1] + j, s0[2] + m] = k + 1
    return regions


def get_masks_3d(p: np.ndarray, mask: np.ndarray, *, max_size_fraction: float = 0.4) -> np.ndarray:
    """Cluster final voxel positions into labelled 3-D masks.

    Parameters
    ----------
    p : ndarray, shape (3, N)
        Final (z, y, x) positions from :func:`follow_flows_3d` for the voxels of ``mask``.
    mask : ndarray of bool, shape (Z, Y, X)
        The voxels that were integrated (their raster order matches ``p``).
    max_size_fraction : float
        Masks holding more than this fraction of the volume's voxels are dropped.

    Returns
    -------
    ndarray of uint16 (uint32 above 65535 masks), shape (Z, Y, X)
        Consecutive labels, 0 = background.

    Examples
    --------
    >>> mask = np.zeros((10, 20, 20), bool); mask[1:4, 2:8, 2:8] = True
    >>> mask[5:9, 12:18, 12:18] = True
    >>> zs, ys, xs = np.nonzero(mask)
    >>> p = np.where(zs < 5, 3.0, 15.0)[None].repeat(3, 0).astype(np.float32); p[0] /= 2
    >>> labels = get_masks_3d(p, mask)
    >>> int(labels.max()), int((labels == labels[2, 3, 3]).sum())
    (2, 108)
    """
    mask = np.asarray(mask, dtype=bool)
    p = np.asarray(p)
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3-D (Z, Y, X) array, got shape {mask.shape}")
    n_pix = int(mask.sum())
    if p.shape != (3, n_pix):
        raise ValueError(f"p must have shape (3, {n_pix}) (one column per voxel), got {p.shape}")
    shape = mask.shape
    labels = np.zeros(shape, np.uint16)
    if n_pix == 0:
        return labels
    iz, iy, ix = (np.clip(p[a], 0, shape[a] - 1).astype(np.int64) for a in range(3))
    hist = _histogram3d(iz, iy, ix, *shape)
    seeds = _find_seeds3d(hist, _SEED_RADIUS, _SEED_MIN_COUNT)
    if seeds.size == 0:
        logger.info("no histogram seeds: no masks found")
        return labels
    order = np.argsort(hist.ravel()[seeds], kind="stable")
    regions = _grow_seeds3d(hist, seeds[order], _GROW_STEPS, _GROW_MIN_COUNT)
    pix_labels = regions[iz, iy, ix]
    counts = np.bincount(pix_labels, minlength=seeds.size + 1)
    keep = counts > 0
    keep[0] = False
    keep &= counts <= max_size_fraction * mask.size
    lut = np.cumsum(keep)
    lut[~keep] = 0
    labels = labels.astype(_label_dtype(int(lut[-1])), copy=False)
    labels[mask] = lut[pix_labels]
    return labels
