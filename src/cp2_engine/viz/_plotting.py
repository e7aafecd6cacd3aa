"""Figures written to files with matplotlib's Agg backend (no GUI, no global pyplot state)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from cp2_engine.metrics import APResult
from cp2_engine.util import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["plot_ap_curve"]


def plot_ap_curve(
    path,
    results: APResult | Mapping[str, APResult],
    *,
    title: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Plot mean AP against the IoU threshold and save it as a png, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.png``.
    results : APResult or mapping of str to APResult
        One result, or several to compare (the keys label the curves).
    title : str, optional
        Figure title.
    overwrite : bool, optional
        Replace an existing file. Default True.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    ValueError
        If ``path`` is not a ``.png``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from cp2_engine.metrics import average_precision
    >>> m = np.zeros((8, 8), np.uint8)
    >>> m[2:6, 2:6] = 1
    >>> r = average_precision(m, m, thresholds=np.arange(0.5, 1, 0.05))
    >>> plot_ap_curve(pathlib.Path(tempfile.mkdtemp()) / "ap.png", r).suffix
    '.png'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"the AP curve is written as a .png, got {path.name!r}")
    curves = {"cp2": results} if isinstance(results, APResult) else dict(results)
    fig = Figure(figsize=(4.5, 3.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, res in curves.items():
        n = res.ap.shape[0]
        ax.plot(res.thresholds, res.mean_ap, marker="o", ms=3, label=f"{name} (n={n})")
    ax.set(xlabel="IoU threshold", ylabel="average precision", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_write(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    logger.info("wrote AP curve %s", path)
    return path
