"""PNG figures of a zoo: AP curves zoo vs generalist, and a t-SNE map of styles by cluster.

Figures are drawn with matplotlib's Agg canvas (no GUI backend) and written atomically.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np

from cp2_engine.zoo._store import atomic_write_file

log = logging.getLogger(__name__)

__all__ = ["plot_ap_curves", "plot_style_map", "thumbnail"]


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


def plot_ap_curves(evaluation, path) -> None:
    """AP against IoU threshold, zoo vs generalist, overall and per cluster (paper Fig. 2c).

    Parameters
    ----------
    evaluation : ZooEvaluation
        From :func:`cp2_engine.zoo.evaluate_zoo`.
    path : str or Path
        PNG file to write.

    Examples
    --------
    >>> plot_ap_curves(evaluation, "ap.png")  # doctest: +SKIP
    """
    groups = evaluation.groups()
    groups = [groups[-1], *groups[:-1]]  # "all" first
    fig = _new_figure(3.0 * len(groups), 3.0)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (name, sel) in zip(axes, groups):
        for ap, label, style in (
            (evaluation.ap_zoo, "zoo", "-"),
            (evaluation.ap_generalist, "generalist", "--"),
        ):
            ax.plot(evaluation.thresholds, ap[sel].mean(axis=0), style, label=label)
        ax.set_title(f"{name} (n={int(sel.sum())})")
        ax.set_xlabel("IoU threshold")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("average precision")
    axes[0].legend(frameon=False)
    _save_png(fig, path)


def thumbnail(image, *, size: int = 96) -> np.ndarray:
    """A grey ``(size, size)`` float thumbnail of the image's centre, scaled to [0, 1].

    Examples
    --------
    >>> thumbnail(np.arange(10000.0).reshape(100, 100), size=32).shape
    (32, 32)
    """
    from cp2_engine.inference import convert_image, resize_image

    x = convert_image(image, channels=(0, 0), normalize=True)[0]
    side = min(x.shape)
    y0, x0 = (x.shape[0] - side) // 2, (x.shape[1] - side) // 2
    crop = x[y0 : y0 + side, x0 : x0 + side]
    return np.clip(resize_image(crop, shape=(size, size)), 0, 1)


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

    Examples
    --------
    >>> plot_style_map(emb, labels, images, "styles.png")  # doctest: +SKIP
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
            tax = fig.add_subplot(grid[row, 1 + col])
            tax.imshow(thumbnail(images[i]), cmap="gray", vmin=0, vmax=1)
            tax.set_xticks([])
            tax.set_yticks([])
            for spine in tax.spines.values():
                spine.set_color(cmap[row])
                spine.set_linewidth(3)
            if col == 0:
                tax.set_ylabel(f"cluster{c}", fontsize=7)
    _save_png(fig, path)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
