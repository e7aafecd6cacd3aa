"""Stand-alone masks from a cp2/Cellpose network output: numpy only, no cp2 import.

This file is copied into every exported BioImage.IO package as ``cp2_masks.py``. It turns the
network output ``(3, H, W)`` = (5·dY, 5·dX, cell-probability logit), or ``(1, 3, H, W)``, into an
integer label image with a simple version of the Cellpose flow-following step:

1. foreground = ``cellprob > cellprob_threshold``;
2. every foreground pixel follows the flow field ``(dY, dX) / 5`` for ``niter`` Euler steps
   (bilinear sampling, positions clamped to the image);
3. the final positions are counted on the pixel grid; seeds are 5×5 local maxima with more than
   10 pixels, grown 5 times into 3×3 neighbours with more than 2;
4. a pixel takes the label of the seed region its final position lands in; masks larger than
   ``max_size_fraction`` of the image are removed;
5. flow-error check: each mask's own flows (heat diffusion from the pixel nearest its centroid,
   unit gradients) are compared with the network's ``(dY, dX) / 5``; masks whose mean squared
   difference exceeds ``flow_threshold`` are removed (0 disables the check);
6. masks smaller than ``min_size`` pixels are removed and the labels renumbered 1..N.

cp2 also fills holes in masks, so its masks can differ slightly (cp2's tests require
AP@0.5 >= 0.9 against cp2's masks on a sample image).

Command line::

    python cp2_masks.py OUTPUT.npy MASKS.npy [--cellprob-threshold 0] [--niter 200]
"""

from __future__ import annotations

import argparse

import numpy as np

__all__ = ["flow_errors", "follow_flows", "masks_from_output"]


def _sample(field: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``field`` (C, H, W) at float positions (clamped to the image)."""
    h, w = field.shape[-2:]
    y0 = np.clip(np.floor(y).astype(np.int64), 0, max(h - 2, 0))
    x0 = np.clip(np.floor(x).astype(np.int64), 0, max(w - 2, 0))
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
    return (
        field[:, y0, x0] * (1 - wy) * (1 - wx)
        + field[:, y0, x1] * (1 - wy) * wx
        + field[:, y1, x0] * wy * (1 - wx)
        + field[:, y1, x1] * wy * wx
    )


def follow_flows(flows: np.ndarray, foreground: np.ndarray, *, niter: int = 200) -> np.ndarray:
    """Final positions ``(2, N)`` of the ``N`` foreground pixels after ``niter`` Euler steps.

    Examples
    --------
    >>> flows = np.zeros((2, 8, 8), np.float32)
    >>> flows[1] = 1.0  # everything flows right
    >>> fg = np.zeros((8, 8), bool)
    >>> fg[2, 1:] = True  # a foreground row: the pixel at x=1 moves 3 px right
    >>> follow_flows(flows, fg, niter=3)[:, 0].tolist()
    [2.0, 4.0]
    """
    h, w = foreground.shape
    ys, xs = np.nonzero(foreground)
    p = np.stack([ys, xs]).astype(np.float32)
    field = (flows * foreground).astype(np.float32)
    for _ in range(int(niter)):
        step = _sample(field, p[0], p[1])
        p[0] = np.clip(p[0] + step[0], 0, h - 1)
        p[1] = np.clip(p[1] + step[1], 0, w - 1)
    return p


def _max_filter(x: np.ndarray, size: int) -> np.ndarray:
    pad = size // 2
    padded = np.pad(x, pad, mode="constant", constant_values=-1)
    return np.lib.stride_tricks.sliding_window_view(padded, (size, size)).max(axis=(-2, -1))


def _seed_regions(hist: np.ndarray) -> np.ndarray:
    """Label the seed regions of the position histogram (local maxima, grown 5 times)."""
    seeds = (hist == _max_filter(hist, 5)) & (hist > 10)
    regions = np.zeros(hist.shape, np.int64)
    regions[seeds] = np.arange(1, int(seeds.sum()) + 1)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    for _ in range(5):
        padded = np.pad(regions, 1)
        grown = regions.copy()
        for dy, dx in shifts:
            nb = padded[1 + dy : 1 + dy + hist.shape[0], 1 + dx : 1 + dx + hist.shape[1]]
            take = (grown == 0) & (nb > 0) & (hist > 2)
            grown[take] = nb[take]
        regions = grown
    return regions


def _label_pixels(masks: np.ndarray):
    """Yield ``(label, ys, xs)`` for every label > 0, one sort for the whole image."""
    flat = masks.ravel()
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat)
    starts = np.cumsum(counts) - counts
    for label in np.nonzero(counts[1:])[0] + 1:
        ys, xs = np.divmod(order[starts[label] : starts[label] + counts[label]], masks.shape[1])
        yield label, ys, xs


def _unit_flows(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The flows ``(2, n)`` of one mask: heat from its centre, unit central differences."""
    y0, x0 = ys.min() - 1, xs.min() - 1
    h, w = ys.max() - y0 + 2, xs.max() - x0 + 2
    inside = np.zeros((h, w), np.float64)
    inside[ys - y0, xs - x0] = 1
    dist = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    cy, cx = ys[np.argmin(dist)] - y0, xs[np.argmin(dist)] - x0
    heat = np.zeros((h, w), np.float64)
    for _ in range(2 * (h - 2 + w - 2 + 4)):
        heat[cy, cx] += 1
        padded = np.pad(heat * inside, 1)
        box = sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
        heat = box / 9.0 * inside
    padded = np.pad(heat, 1)
    dy = padded[2:, 1:-1] - padded[:-2, 1:-1]
    dx = padded[1:-1, 2:] - padded[1:-1, :-2]
    flows = np.stack([dy[ys - y0, xs - x0], dx[ys - y0, xs - x0]])
    return flows / (1e-20 + np.sqrt((flows**2).sum(axis=0)))


def flow_errors(masks: np.ndarray, flows: np.ndarray) -> dict:
    """``{label: mean squared difference}`` between each mask's own unit flows and
    ``flows / 5`` (the network's flows).

    Examples
    --------
    >>> masks = np.zeros((9, 9), np.uint32)
    >>> masks[2:7, 2:7] = 1
    >>> round(flow_errors(masks, np.zeros((2, 9, 9)))[1], 3)  # unit flows vs none: 1 per pixel
    1.0
    """
    errors = {}
    for label, ys, xs in _label_pixels(masks):
        own = _unit_flows(ys, xs)
        errors[int(label)] = float(((own - flows[:, ys, xs] / 5.0) ** 2).sum(axis=0).mean())
    return errors


def masks_from_output(
    output,
    *,
    cellprob_threshold: float = 0.0,
    flow_threshold: float = 0.4,
    niter: int = 200,
    min_size: int = 15,
    max_size_fraction: float = 0.4,
) -> np.ndarray:
    """Label image ``(H, W)`` (uint32, 0 = background) from a network output ``(3, H, W)``.

    Examples
    --------
    >>> out = np.full((3, 32, 32), -5.0, np.float32)
    >>> yy, xx = np.mgrid[:32, :32]
    >>> inside = (yy - 16) ** 2 + (xx - 16) ** 2 < 64
    >>> out[0], out[1] = 5 * np.sign(16 - yy), 5 * np.sign(16 - xx)
    >>> out[2][inside] = 5.0
    >>> masks = masks_from_output(out)
    >>> int(masks.max()), bool((masks > 0)[inside].all())
    (1, True)
    """
    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 4 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 3 or out.shape[0] != 3:
        raise ValueError(f"expected a network output (3, H, W) or (1, 3, H, W), got {out.shape}")
    foreground = out[2] > cellprob_threshold
    masks = np.zeros(out.shape[1:], np.uint32)
    if not foreground.any():
        return masks
    p = follow_flows(out[:2] / 5.0, foreground, niter=niter)
    iy, ix = np.round(p).astype(np.int64)
    hist = np.zeros(out.shape[1:], np.int64)
    np.add.at(hist, (iy, ix), 1)
    regions = _seed_regions(hist)
    masks[foreground] = regions[iy, ix]
    counts = np.bincount(masks.ravel())
    masks[(counts > max_size_fraction * masks.size)[masks]] = 0
    if flow_threshold > 0:
        bad = [k for k, e in flow_errors(masks, out[:2]).items() if e > flow_threshold]
        masks[np.isin(masks, bad)] = 0
    counts = np.bincount(masks.ravel())
    drop = counts < min_size
    drop[0] = True
    keep = np.cumsum(~drop) * ~drop
    return keep[masks].astype(np.uint32)


def main(argv=None) -> int:
    """``python cp2_masks.py OUTPUT.npy MASKS.npy``: masks from a saved network output."""
    parser = argparse.ArgumentParser(description="masks from a cp2/Cellpose network output")
    parser.add_argument("output", help=".npy of the network output (3, H, W) or (1, 3, H, W)")
    parser.add_argument("masks", help=".npy to write the label image to")
    parser.add_argument("--cellprob-threshold", type=float, default=0.0)
    parser.add_argument("--flow-threshold", type=float, default=0.4, help="0 disables")
    parser.add_argument("--niter", type=int, default=200)
    parser.add_argument("--min-size", type=int, default=15)
    args = parser.parse_args(argv)
    out = np.load(args.output, allow_pickle=False)
    masks = masks_from_output(
        out,
        cellprob_threshold=args.cellprob_threshold,
        flow_threshold=args.flow_threshold,
        niter=args.niter,
        min_size=args.min_size,
    )
    np.save(args.masks, masks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
