"""The images of an experiment: a training pool in annotation order and a held-out test set.

Three sources: seeded synthetic cells (:func:`synthetic_data`), a folder of image/label pairs
split at random (:func:`folder_data`), and a dataset with split CSVs (:func:`split_data`: the
held-out-category experiments, e.g. DSB2018 ``stained_tissue_rgb`` or Usiigaci).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ExperimentData", "folder_data", "split_data", "synthetic_data"]


@dataclass(frozen=True)
class ExperimentData:
    """Training pool (in annotation order) and test set, with the objects' diameter (pixels).

    ``train_names`` / ``test_names`` name the images (empty: ``image_000``, ... are used).
    """

    train_images: list
    train_labels: list
    test_images: list
    test_labels: list
    diameter: float
    source: str
    train_names: tuple = ()
    test_names: tuple = ()

    def names(self) -> list[str]:
        """Names of the training images (given ones, else ``image_000``, ...).

        Examples
        --------
        >>> ExperimentData([0, 0], [0, 0], [], [], diameter=1.0, source="x").names()
        ['image_000', 'image_001']
        """
        if self.train_names:
            return list(self.train_names)
        return [f"image_{i:03d}" for i in range(len(self.train_images))]


def synthetic_data(
    *,
    n_train: int = 8,
    n_test: int = 4,
    shape: tuple[int, int] = (128, 128),
    diameter: float = 24.0,
    style: str = "phase",
    seed: int = 0,
) -> ExperimentData:
    """Synthetic touching cells from :func:`cp2_engine.synthetic.touching_cells`.

    Examples
    --------
    >>> d = synthetic_data(n_train=2, n_test=1, shape=(64, 64))
    >>> len(d.train_images), d.test_labels[0].shape
    (2, (64, 64))
    """
    from cp2_engine.synthetic import touching_cells

    made = [
        touching_cells(shape, diameter=diameter, seed=seed * 1000 + i, style=style)
        for i in range(n_train + n_test)
    ]
    return ExperimentData(
        train_images=[m.image for m in made[:n_train]],
        train_labels=[m.labels for m in made[:n_train]],
        test_images=[m.image for m in made[n_train:]],
        test_labels=[m.labels for m in made[n_train:]],
        diameter=float(diameter),
        source=f"synthetic:{style}",
    )


def folder_data(
    folder: str | os.PathLike, *, n_train: int | None = None, n_test: int = 4, seed: int = 0
) -> ExperimentData:
    """Image/label pairs of a folder, split at random (seeded) into train and test sets.

    The diameter is the median over images of their median ROI diameter.
    """
    from cp2_engine.metrics import diameters
    from cp2_engine.training import load_folder

    data = load_folder(folder)
    if len(data) < 2:
        raise ValueError(f"{folder} needs at least 2 labelled images, found {len(data)}")
    n_test = min(n_test, len(data) - 1)
    order = np.random.default_rng(seed).permutation(len(data))
    test, train = order[:n_test], order[n_test:]
    if n_train is not None:
        train = train[:n_train]
    diam = float(np.median([diameters(data.labels[i])[0] for i in train]))
    return ExperimentData(
        train_images=[data.images[i] for i in train],
        train_labels=[data.labels[i] for i in train],
        test_images=[data.images[i] for i in test],
        test_labels=[data.labels[i] for i in test],
        diameter=diam,
        source=str(folder),
    )


def _read_split(path: Path) -> list[tuple[str, float]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"id", "median_diameter_px"} <= set(rows[0]):
        raise ValueError(f"{path}: expected the columns id, type, median_diameter_px")
    return [(r["id"], float(r["median_diameter_px"])) for r in rows]


def _load_pair(folder: Path, ident: str, diam: float, diameter: float, crop: int):
    """One image (grey: the mean of RGB, as channels [0, 0]) and its labels, resized so that
    the median object diameter becomes ``diameter``, then centre-cropped to ``crop`` (0: none)."""
    from cp2_engine.inference import resize_image
    from cp2_engine.io import imread
    from cp2_engine.postprocess import consecutive_labels

    img = imread(folder / f"{ident}_img.tif").astype(np.float32)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    lab = imread(folder / f"{ident}_masks.tif")
    shape = tuple(max(16, round(n * diameter / diam)) for n in img.shape[:2])
    img = resize_image(img, shape=shape)
    lab = resize_image(lab.astype(np.int32), shape=shape, interpolation="nearest")
    if crop:
        y0, x0 = ((n - min(n, crop)) // 2 for n in shape)
        img, lab = img[y0 : y0 + crop, x0 : x0 + crop], lab[y0 : y0 + crop, x0 : x0 + crop]
    return np.ascontiguousarray(img), consecutive_labels(lab)[0].astype(np.uint16)


def split_data(
    dataset: str | os.PathLike,
    *,
    pool_split: str | os.PathLike,
    test_split: str | os.PathLike,
    diameter: float,
    n_pool: int | None = None,
    n_test: int | None = None,
    crop: int = 0,
    seed: int = 0,
) -> ExperimentData:
    """A held-out category from split CSVs: the pool in a seeded random order, and a test set.

    Parameters
    ----------
    dataset : path
        Dataset folder holding ``train/<id>_img.tif`` and ``train/<id>_masks.tif`` (the layout of
        ``../shared/datasets/*``), or that ``train`` folder itself.
    pool_split, test_split : path
        CSV files with the columns ``id``, ``type``, ``median_diameter_px`` (``splits/*.csv``).
    diameter : float
        Every image is resized once (labels by nearest neighbour) so that its median object
        diameter (the CSV's) becomes this, as if all were taken at one magnification.
    n_pool, n_test : int, optional
        Keep the first ``n_pool`` images of the order and the first ``n_test`` test images.
    crop : int
        Centre-crop every resized image to at most ``crop`` x ``crop`` pixels (0: no crop).
    seed : int
        Seed of the pool's order (the annotation order of every strategy).

    Returns
    -------
    ExperimentData
        With ``train_names`` / ``test_names`` = the CSV ids.
    """
    folder = Path(dataset)
    if (folder / "train").is_dir():
        folder = folder / "train"
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} not found (expected <dataset>/train)")
    pool = _read_split(Path(pool_split))
    test = _read_split(Path(test_split))[:n_test]
    if not pool or not test:
        raise ValueError(f"{pool_split} and {test_split} must each list at least one image")
    order = np.random.default_rng(seed).permutation(len(pool))[:n_pool]
    pool = [pool[i] for i in order]
    train = [_load_pair(folder, i, d, diameter, crop) for i, d in pool]
    tests = [_load_pair(folder, i, d, diameter, crop) for i, d in test]
    return ExperimentData(
        train_images=[t[0] for t in train],
        train_labels=[t[1] for t in train],
        test_images=[t[0] for t in tests],
        test_labels=[t[1] for t in tests],
        diameter=float(diameter),
        source=f"{folder.parent.name}: pool {Path(pool_split).name}, test {Path(test_split).name}",
        train_names=tuple(p[0] for p in pool),
        test_names=tuple(t[0] for t in test),
    )
