"""Zoo versus generalist: average precision per routed cluster and overall (paper Fig. 2c)."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np

from cp2_engine.util import ProgressEvent, atomic_write_file, drain

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ZooEvaluation",
    "evaluate_zoo",
    "iter_evaluate_zoo",
    "plot_ap_curves",
]

DEFAULT_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True, eq=False)
class ZooEvaluation:
    """AP of the zoo (routed specialists) and of the generalist on the same test images.

    Attributes
    ----------
    thresholds : numpy.ndarray
        ``(T,)`` IoU thresholds.
    clusters : numpy.ndarray
        ``(N,)`` cluster each test image was routed to.
    ap_zoo, ap_generalist : numpy.ndarray
        ``(N, T)`` AP per image and threshold.
    names : tuple of str
        Test image names.
    """

    thresholds: np.ndarray
    clusters: np.ndarray
    ap_zoo: np.ndarray
    ap_generalist: np.ndarray
    names: tuple

    def groups(self) -> list[tuple[str, np.ndarray]]:
        """``(name, boolean mask of images)`` for every routed cluster, then ``"all"``."""
        out = [(f"cluster{c}", self.clusters == c) for c in np.unique(self.clusters)]
        return [*out, ("all", np.ones(self.clusters.size, dtype=bool))]

    def rows(self) -> list[dict]:
        """One summary row per group: n_images, and both models' AP at 0.5, 0.75, 0.9, mean."""
        rows = []
        for name, sel in self.groups():
            row = {"group": name, "n_images": int(sel.sum())}
            for label, ap in (("zoo", self.ap_zoo[sel]), ("generalist", self.ap_generalist[sel])):
                mean = ap.mean(axis=0)
                for t in (0.5, 0.75, 0.9):
                    hit = np.flatnonzero(np.isclose(self.thresholds, t))
                    if hit.size:
                        row[f"{label}_ap{t:g}"] = float(mean[hit[0]])
                row[f"{label}_ap_mean"] = float(mean.mean())
            rows.append(row)
        return rows

    def to_markdown(self) -> str:
        """The summary as a Markdown table (AP to 3 decimals).

        Examples
        --------
        >>> ev = ZooEvaluation(np.array([0.5]), np.array([0]), np.ones((1, 1)),
        ...                    np.zeros((1, 1)), ("a",))
        >>> print(ev.to_markdown().splitlines()[0])
        | group | n_images | zoo_ap0.5 | zoo_ap_mean | generalist_ap0.5 | generalist_ap_mean |
        """
        rows = self.rows()
        keys = list(rows[0])
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for row in rows:
            cells = [f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def write_csv(self, path) -> None:
        """Write one row per test image and threshold (long format), atomically."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["image", "cluster", "threshold", "ap_zoo", "ap_generalist"])
        for i, name in enumerate(self.names):
            for j, t in enumerate(self.thresholds):
                writer.writerow(
                    [
                        name,
                        int(self.clusters[i]),
                        f"{t:.2f}",
                        f"{self.ap_zoo[i, j]:.6f}",
                        f"{self.ap_generalist[i, j]:.6f}",
                    ]
                )
        data = buf.getvalue().encode()
        atomic_write_file(path, lambda f: f.write(data))


def _oracle_diameter(labels) -> float | None:
    from cp2_engine.metrics import diameters

    d = diameters(np.asarray(labels))[0]
    return d if d > 0 else None


def iter_evaluate_zoo(
    zoo_model,
    images: Sequence,
    labels: Sequence,
    *,
    generalist=None,
    names: Sequence[str] | None = None,
    channels=(0, 0),
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    use_label_diameters: bool = True,
) -> Generator[ProgressEvent, None, ZooEvaluation]:
    """Segment every test image with the zoo and the generalist; yields progress per image.

    Parameters
    ----------
    zoo_model : ZooModel
        The zoo.
    images, labels : sequence of numpy.ndarray
        Test images and true labels.
    generalist : Model, optional
        Comparison model; default the zoo's generalist.
    names : sequence of str, optional
        Image names for the CSV.
    channels : (int, int)
        Cellpose channels.
    thresholds : sequence of float
        IoU thresholds (default 0.5, 0.55, ..., 0.95).
    use_label_diameters : bool
        Give both models each image's true median diameter (as the paper's evaluation did);
        otherwise both use their defaults. An image without cells gets no diameter.

    Yields
    ------
    SegmentProgress
        ``done`` of ``total`` images evaluated (``segmentation``: the zoo's of the last one).

    Returns
    -------
    ZooEvaluation

    Examples
    --------
    >>> ev = evaluate_zoo(ZooModel.load("zoo"), images, labels)  # doctest: +SKIP
    >>> print(ev.to_markdown())  # doctest: +SKIP
    """
    from cp2_engine.inference import Model, SegmentProgress
    from cp2_engine.metrics import average_precision

    if len(images) != len(labels) or not images:
        raise ValueError(
            f"expected equal, non-zero numbers of test images and labels, "
            f"got {len(images)} and {len(labels)}"
        )
    if generalist is None:
        generalist = Model.load(zoo_model.zoo.model_path(None), device=zoo_model.device)
    thr = tuple(float(t) for t in thresholds)
    ap_zoo, ap_gen, clusters = [], [], []
    for i, (img, lab) in enumerate(zip(images, labels)):
        diam = _oracle_diameter(lab) if use_label_diameters else None
        routed = zoo_model.segment(img, diameter=diam, channels=channels)
        general = generalist.segment(img, diameter=diam, channels=channels)
        ap_zoo.append(average_precision(lab, routed.masks, thresholds=thr).ap[0])
        ap_gen.append(average_precision(lab, general.masks, thresholds=thr).ap[0])
        clusters.append(routed.route.cluster)
        text = f"image {i + 1}/{len(images)} evaluated (cluster {routed.route.cluster})"
        yield SegmentProgress(routed, done=i + 1, total=len(images), message=text)
    names = tuple(names) if names is not None else tuple(f"image{i}" for i in range(len(images)))
    return ZooEvaluation(
        np.array(thr), np.array(clusters), np.array(ap_zoo), np.array(ap_gen), names
    )


def evaluate_zoo(zoo_model, images: Sequence, labels: Sequence, **kwargs) -> ZooEvaluation:
    """Run :func:`iter_evaluate_zoo` to the end.

    Examples
    --------
    >>> evaluate_zoo(ZooModel.load("zoo"), images, labels).rows()[-1]  # doctest: +SKIP
    """
    gen = iter_evaluate_zoo(zoo_model, images, labels, **kwargs)
    return drain(gen)


def plot_ap_curves(evaluation: ZooEvaluation, path) -> None:
    """AP against IoU threshold, zoo vs generalist, overall and per cluster (paper Fig. 2c).

    Draws with :func:`cp2_engine.viz.plot_ap_groups`: the ``"all"`` panel first, then one per
    routed cluster; the zoo solid, the generalist dashed.

    Parameters
    ----------
    evaluation : ZooEvaluation
        From :func:`cp2_engine.zoo.evaluate_zoo`.
    path : str or Path
        PNG file to write.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> ev = ZooEvaluation(np.array([0.5, 0.75]), np.array([0, 1]), np.ones((2, 2)),
    ...                    np.zeros((2, 2)), ("a", "b"))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ap.png"
    >>> plot_ap_curves(ev, path)
    >>> path.stat().st_size > 0
    True
    """
    from cp2_engine.viz import plot_ap_groups

    groups = evaluation.groups()
    curves = {"zoo": evaluation.ap_zoo, "generalist": evaluation.ap_generalist}
    plot_ap_groups(path, evaluation.thresholds, curves, [groups[-1], *groups[:-1]])
