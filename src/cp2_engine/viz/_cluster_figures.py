"""Figures of images grouped into clusters: AP curves per group, and a t-SNE map of styles.

Drawn from plain arrays (the zoo adapts its own results, see
``cp2_engine.zoo.plot_ap_curves``) with matplotlib's Agg canvas (no GUI backend), written
atomically.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from cp2_engine.util import atomic_write_file

from ._truth_overlay import _grey

log = logging.getLogger(__name__)

__all__ = ["plot_ap_groups", "plot_style_map", "thumbnail"]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    data = buf.getvalue()
    atomic_write_file(path, lambda f: f.write(data))


def plot_ap_groups(
    path,
    thresholds,
    curves: Mapping[str, np.ndarray],
    groups: Sequence[tuple[str, np.ndarray]],
) -> None:
    """Mean AP against IoU threshold of several models, one panel per group of images.

    Parameters
    ----------
    path : str or Path
        PNG file to write.
    thresholds : array_like
        ``(T,)`` IoU thresholds.
    curves : mapping of str to numpy.ndarray
        Model name -> ``(N, T)`` AP per image and threshold. The first curve is drawn solid,
        the others dashed.
    groups : sequence of (str, numpy.ndarray)
        Panel title and ``(N,)`` boolean selection of images, one panel each, in this order.

    Raises
    ------
    ValueError
        If there is no group or no curve, or a curve is not ``(N, T)``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> ap = np.array([[0.9, 0.5], [0.7, 0.3]])
    >>> groups = [("all", np.array([True, True])), ("first", np.array([True, False]))]
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ap.png"
    >>> plot_ap_groups(path, [0.5, 0.75], {"zoo": ap, "generalist": ap / 2}, groups)
    >>> path.read_bytes()[:4]
    b'\\x89PNG'
    """
    thresholds = np.asarray(thresholds, dtype=float)
    if not groups or not curves:
        raise ValueError("expected at least one group and one curve to plot")
    n = len(groups[0][1])
    for name, ap in curves.items():
        if np.shape(ap) != (n, thresholds.size):
            raise ValueError(
                f"curve {name!r} must be (N, T) = ({n}, {thresholds.size}), got {np.shape(ap)}"
            )
    fig = _new_figure(3.0 * len(groups), 3.0)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (title, sel) in zip(axes, groups):
        sel = np.asarray(sel, dtype=bool)
        for k, (label, ap) in enumerate(curves.items()):
            ax.plot(thresholds, np.asarray(ap)[sel].mean(axis=0), "-" if k == 0 else "--",
                    label=label)  # fmt: skip
        ax.set_title(f"{title} (n={int(sel.sum())})")
        ax.set_xlabel("IoU threshold")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("average precision")
    axes[0].legend(frameon=False)
    _save_png(fig, path)


def _bilinear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre bilinear sampling (no anti-aliasing, like OpenCV ``INTER_LINEAR``)."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    y0, y1, wy = _bilinear_axis(x.shape[0], size)
    x0, x1, wx = _bilinear_axis(x.shape[1], size)
    rows = x[y0] * (1 - wy[:, None]) + x[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def thumbnail(image, *, size: int = 96) -> np.ndarray:
    """A grey ``(size, size)`` float thumbnail of the image's centre, scaled to [0, 1].

    The channels are averaged, the 1st and 99th percentiles mapped to 0 and 1, the central
    square cropped and resized bilinearly.

    Examples
    --------
    >>> thumbnail(np.arange(10000.0).reshape(100, 100), size=32).shape
    (32, 32)
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    x = _grey(image, clip=False)
    side = min(x.shape)
    y0, x0 = (x.shape[0] - side) // 2, (x.shape[1] - side) // 2
    crop = x[y0 : y0 + side, x0 : x0 + side]
    return np.clip(_resize(crop, size) if side != size else crop, 0, 1).astype(np.float32)


def _examples(labels: np.ndarray, n_examples: int, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        out[int(c)] = rng.choice(members, size=min(n_examples, members.size), replace=False)
    return out


def plot_style_map(
    embedding, labels, images: Sequence, path, *, n_examples: int = 4, seed: int = 0
) -> None:
    """t-SNE map of styles coloured by cluster, with example thumbnails of each cluster.

    Parameters
    ----------
    embedding : array_like
        ``(N, 2)`` coordinates (:func:`cp2_engine.zoo.tsne_embedding`).
    labels : array_like
        ``(N,)`` cluster ids.
    images : sequence of array_like
        The N images (thumbnails are drawn from them).
    path : str or Path
        PNG file to write.
    n_examples : int
        Thumbnails per cluster (picked at random, seeded).
    seed : int
        Seed of the example choice.

    Raises
    ------
    ValueError
        If the embedding is not ``(N, 2)`` for N labels and N images.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> rng = np.random.default_rng(0)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "styles.png"
    >>> images = [rng.random((16, 16)) for _ in range(4)]
    >>> plot_style_map(rng.normal(size=(4, 2)), [0, 0, 1, 1], images, path, n_examples=2)
    >>> path.read_bytes()[:4]
    b'\\x89PNG'
    """
    emb = np.asarray(embedding, dtype=float)
    labels = np.asarray(labels)
    if emb.shape != (labels.size, 2) or len(images) != labels.size:
        raise ValueError(
            f"expected (N, 2) embedding, N labels and N images, got {emb.shape}, "
            f"{labels.shape} and {len(images)}"
        )
    examples = _examples(labels, n_examples, seed)
    n_rows = len(examples)
    fig = _new_figure(4.0 + 1.2 * n_examples, max(4.0, 1.2 * n_rows))
    grid = fig.add_gridspec(n_rows, 1 + n_examples, width_ratios=[4.0] + [1.0] * n_examples)
    ax = fig.add_subplot(grid[:, 0])
    cmap = _colours(n_rows)
    for row, c in enumerate(examples):
        sel = labels == c
        ax.scatter(emb[sel, 0], emb[sel, 1], s=8, color=cmap[row], label=f"cluster{c}")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("t-SNE of style vectors")
    ax.legend(frameon=False, fontsize=7, markerscale=2)
    for row, (c, idx) in enumerate(examples.items()):
        for col, i in enumerate(idx):
            _draw_thumbnail(fig.add_subplot(grid[row, 1 + col]), images[i], cmap[row])
            if col == 0:
                fig.axes[-1].set_ylabel(f"cluster{c}", fontsize=7)
    _save_png(fig, path)


def _draw_thumbnail(ax, image, colour) -> None:
    ax.imshow(thumbnail(image), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(colour)
        spine.set_linewidth(3)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
