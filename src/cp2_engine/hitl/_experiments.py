"""The Cellpose 2.0 paper's experiments, as generators of progress events.

``learning-curve``
    AP@0.5 on a test set against the number of training ROIs, for a pretrained and a scratch
    starting model, over random training subsets (:func:`cp2_engine.training.training_subsets`),
    each trained in offline mode.
``hitl-vs-offline``
    The four strategies {online, offline} × {pretrained, scratch} on the same sequence of
    training images (paper Fig. 5). *Online* is human-in-the-loop: the current model segments the
    next image, the :class:`~cp2_engine.hitl.SimulatedAnnotator` corrects it (drawing only the
    ROIs the model missed or got wrong), and the starting model is fine-tuned on all corrected
    images so far (online mode, in a :class:`~cp2_engine.hitl.HitlProject`). *Offline* is
    annotation without model help: the annotator draws every ROI of the image, and the starting
    model is trained on all images so far in offline mode. Each round reports the ROIs the human
    drew and the test AP of the new model.

Every experiment is a generator: it yields :class:`Progress` and :class:`Row` events (and passes
through the :class:`cp2_engine.training.TrainEvent` s of every training run) and returns
the list of result rows (dicts), which :func:`write_results` saves as CSV, JSON and a PNG plot.
Given a ``journal`` folder, each finished row is saved there (``_journal.py``) and a run killed
mid-way continues from its finished rows (and, online, from its last finished round).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cp2_engine.hitl._annotator import SimulatedAnnotator
from cp2_engine.hitl._journal import RowJournal, finished_model, online_round, open_project
from cp2_engine.util import drain

logger = logging.getLogger(__name__)
_NO_JOURNAL = RowJournal(None)

__all__ = [
    "ExperimentData",
    "ExperimentSettings",
    "Progress",
    "Row",
    "folder_data",
    "iter_hitl_vs_offline",
    "iter_learning_curve",
    "pretrain_synthetic",
    "synthetic_data",
]


# ----------------------------------------------------------------------------- data and settings
@dataclass(frozen=True)
class ExperimentData:
    """Training and test images with labels, and the objects' typical diameter (pixels)."""

    train_images: list
    train_labels: list
    test_images: list
    test_labels: list
    diameter: float
    source: str


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


@dataclass(frozen=True)
class ExperimentSettings:
    """Sizes of an experiment run. :meth:`quick` fits 2 CPU cores; the defaults are the paper's.

    Parameters
    ----------
    n_epochs_online, n_epochs_offline : int
        Epochs of one online (HITL) retraining and of one offline training (100, 300).
    bsize, batch_size, min_images_per_epoch : int
        Training crop size, batch size and images per epoch (224, 8, 8).
    n_rounds : int
        Images annotated in ``hitl-vs-offline`` (one per round).
    subset_sizes : tuple of float or None
        Training-subset sizes of the learning curve (None = 0.25, 0.5, 1, 2, 4, ...).
    n_seeds : int
        Random subsets per size.
    pretrain_epochs : int
        Epochs of the synthetic pre-training used when no pretrained model is given.
    device : str
        Torch device.
    seed : int
        Seed of subsets and training.
    """

    n_epochs_online: int = 100
    n_epochs_offline: int = 300
    bsize: int = 224
    batch_size: int = 8
    min_images_per_epoch: int = 8
    n_rounds: int = 8
    subset_sizes: tuple | None = None
    n_seeds: int = 5
    pretrain_epochs: int = 300
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        names = ("n_epochs_online", "n_epochs_offline", "bsize", "batch_size",
                 "min_images_per_epoch", "n_rounds", "n_seeds", "pretrain_epochs")  # fmt: skip
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @classmethod
    def quick(cls, **overrides: Any) -> ExperimentSettings:
        """Small settings that finish in minutes on 2 CPU cores.

        Examples
        --------
        >>> ExperimentSettings.quick(n_rounds=1).n_rounds
        1
        """
        base = {
            "n_epochs_online": 4,
            "n_epochs_offline": 6,
            "bsize": 64,
            "batch_size": 4,
            "min_images_per_epoch": 4,
            "n_rounds": 2,
            "subset_sizes": (0.5, 1, 2),
            "n_seeds": 1,
            "pretrain_epochs": 8,
            "device": "cpu",
        }
        return cls(**{**base, **overrides})

    def train_config(self, mode: str):
        """The TrainConfig of an online or offline training run."""
        from cp2_engine.training import TrainConfig

        epochs = self.n_epochs_online if mode == "online" else self.n_epochs_offline
        return TrainConfig(
            mode=mode,
            n_epochs=epochs,
            bsize=self.bsize,
            batch_size=self.batch_size,
            min_images_per_epoch=self.min_images_per_epoch,
            warmup_epochs=min(10, epochs // 2),
            min_train_masks=1,
            save_every=max(1, epochs),
            seed=self.seed,
            device=self.device,
        )


# ----------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Progress:
    """A step of an experiment: ``done`` of ``total`` units, with a human-readable message."""

    experiment: str
    done: int
    total: int
    message: str


@dataclass(frozen=True)
class Row:
    """One result row (also part of the experiment's return value)."""

    experiment: str
    values: dict


# ----------------------------------------------------------------------------- helpers
def _drain(gen: Generator) -> Any:
    """Run a generator to the end and return its return value."""
    return drain(gen)


def _n_rois(labels: Sequence[np.ndarray]) -> int:
    return int(sum(len(np.unique(lab[lab > 0])) for lab in labels))


def _test_ap(model, data: ExperimentData) -> float:
    """Mean AP at IoU 0.5 of ``model`` on the test set."""
    from cp2_engine.metrics import average_precision

    preds = [model.segment(img, diameter=data.diameter).masks for img in data.test_images]
    return float(average_precision(data.test_labels, preds, thresholds=(0.5,)).mean_ap[0])


def _train(start, images, labels, config):
    """Train (yielding the training events) and return a Model wrapping the new net."""
    from cp2_engine.inference import Model
    from cp2_engine.training import iter_train

    result = yield from iter_train(start, images, labels, config=config)
    return Model.from_net(result.net, name="trained")


def _starting_model(init: str, pretrained: str | os.PathLike | None, settings):
    """The ``(model for predictions, spec for training)`` of a starting point."""
    from cp2_engine.inference import Model

    if init == "scratch":
        return Model.random(seed=settings.seed, device=settings.device), "scratch"
    return Model.load(pretrained, device=settings.device), str(pretrained)


def pretrain_synthetic(
    path: str | os.PathLike, *, settings: ExperimentSettings, style: str = "fluorescence"
) -> Path:
    """Train a stand-in "pretrained" model on synthetic cells of another style; save to ``path``.

    Used when no pretrained model file is given (cp2 ships no weights and downloads none).

    Examples
    --------
    >>> p = pretrain_synthetic("/tmp/m", settings=ExperimentSettings.quick())  # doctest: +SKIP
    """
    from cp2_engine.network import save_model

    recipe = f"{style}|{settings.pretrain_epochs}|{settings.train_config('offline')!r}"
    path = Path(path)
    if finished_model(path, recipe):  # an interrupted `cp2 experiment` run again
        return path
    data = synthetic_data(n_train=8, n_test=0, style=style, seed=settings.seed + 101)
    config = dataclasses.replace(
        settings.train_config("offline"), n_epochs=settings.pretrain_epochs, save_every=10**6
    )
    model = _drain(_train("scratch", data.train_images, data.train_labels, config))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model.net, path, metadata={"pretrained_on": data.source, "pretrain_recipe": recipe})
    return path


# ----------------------------------------------------------------------------- learning curve
def iter_learning_curve(
    data: ExperimentData,
    *,
    pretrained: str | os.PathLike,
    settings: ExperimentSettings | None = None,
    journal: str | os.PathLike | None = None,
    restart: bool = False,
) -> Generator[Progress | Row, None, list[dict]]:
    """AP against the number of training ROIs, pretrained vs scratch, over random subsets.

    Parameters
    ----------
    data : ExperimentData
        Training pool and test set.
    pretrained : path or model name
        The pretrained starting model.
    settings : ExperimentSettings, optional
        Sizes (default: the paper's).
    journal : path, optional
        Folder where each finished row is saved: run again after a crash, the same call replays
        those rows and trains only the others. ``restart=True`` discards them first.

    Yields
    ------
    Progress or Row

    Returns
    -------
    list of dict
        One row per (init, subset): ``init, size, seed, n_images, n_rois, ap50, train_seconds``.
    """
    from cp2_engine.training import take_subset, training_subsets

    settings = settings or ExperimentSettings()
    n = len(data.train_images)
    sizes = [s for s in (settings.subset_sizes or []) if s < 1 or s <= n] or None
    subsets = training_subsets(n, sizes=sizes, n_seeds=settings.n_seeds, seed=settings.seed)
    total, rows = 2 * len(subsets), []
    config = settings.train_config("offline")
    fp = RowJournal.fingerprint("learning-curve", data, settings, pretrained)
    journal = RowJournal(journal, restart=restart, fingerprint=fp)
    for init in ("pretrained", "scratch"):
        start = "scratch" if init == "scratch" else str(pretrained)
        for sub in subsets:
            if (row := journal.get(f"row_{len(rows):04d}")) is not None:
                rows.append(row)
                yield Row("learning-curve", row)  # finished before an interruption
                continue
            yield Progress("learning-curve", len(rows), total, f"{init}: {sub.size} images")
            images, labels = take_subset(data.train_images, data.train_labels, sub)
            t0 = time.perf_counter()
            model = yield from _train(start, images, labels, config)
            seconds = time.perf_counter() - t0
            row = {
                "init": init,
                "size": sub.size,
                "seed": sub.seed,
                "n_images": len(images),
                "n_rois": _n_rois(labels),
                "ap50": _test_ap(model, data),
                "train_seconds": round(seconds, 2),
            }
            journal.put(f"row_{len(rows):04d}", row)
            rows.append(row)
            yield Row("learning-curve", row)
    yield Progress("learning-curve", total, total, "done")
    return rows


# ----------------------------------------------------------------------------- HITL vs offline
def _online_rounds(data, init, spec, settings, workdir: Path, journal=_NO_JOURNAL):
    """Online strategy: predict, correct with the simulated annotator, fine-tune, repeat."""
    project = open_project(
        workdir / f"online_{init}",
        journal,
        images=data.train_images[: settings.n_rounds],
        ground_truth=data.train_labels[: settings.n_rounds],
        initial_model=spec,
        train_config=settings.train_config("online"),
        diameter=data.diameter,
        device=settings.device,
    )
    annotator, drawn_total = SimulatedAnnotator(), 0
    for round_no in range(1, settings.n_rounds + 1):
        key = f"online-{init}-r{round_no:03d}"
        if (row := journal.get(key)) is not None:
            drawn_total = row["drawn_total"]
            yield row  # finished before an interruption
            continue
        drawn, seconds, model = yield from online_round(
            project, round_no, annotator, journal, key, lambda p: p.next_image()
        )
        drawn_total += drawn
        yield round_no, drawn, drawn_total, seconds, model


def _offline_rounds(data, init, spec, settings, journal=_NO_JOURNAL):
    """Offline strategy: the annotator draws every ROI; train offline on all images so far."""
    annotator, drawn_total = SimulatedAnnotator(), 0
    config = settings.train_config("offline")
    for round_no in range(1, settings.n_rounds + 1):
        truth = data.train_labels[round_no - 1]
        correction = annotator.correct(truth, np.zeros_like(truth))
        drawn_total += correction.n_drawn
        if (row := journal.get(f"offline-{init}-r{round_no:03d}")) is not None:
            yield row  # finished before an interruption
            continue
        t0 = time.perf_counter()
        images, labels = data.train_images[:round_no], data.train_labels[:round_no]
        model = yield from _train(spec, images, labels, config)
        yield round_no, correction.n_drawn, drawn_total, time.perf_counter() - t0, model


def iter_hitl_vs_offline(
    data: ExperimentData,
    *,
    pretrained: str | os.PathLike,
    settings: ExperimentSettings | None = None,
    workdir: str | os.PathLike | None = None,
    journal: str | os.PathLike | None = None,
    restart: bool = False,
) -> Generator[Progress | Row, None, list[dict]]:
    """The four strategies {online, offline} × {pretrained, scratch} (paper Fig. 5).

    Parameters
    ----------
    data : ExperimentData
        Images annotated in order (one per round) and the test set.
    pretrained : path or model name
        The pretrained starting model.
    settings : ExperimentSettings, optional
        Sizes (default: the paper's).
    workdir : path, optional
        Where the online strategies' HITL projects go (default: ``<journal>/projects``, else a
        temporary folder). A ``journal`` of an interrupted run uses the folder that run used.
    journal, restart : path, bool, optional
        As for :func:`iter_learning_curve`; an online strategy resumes at its last finished
        round (its HITL project in ``workdir``).

    Returns
    -------
    list of dict
        One row per (strategy, round), round 0 being the starting model: ``mode, init, round,
        n_images, drawn, drawn_total, ap50, train_seconds``.
    """
    settings = settings or ExperimentSettings()
    if settings.n_rounds > len(data.train_images):
        raise ValueError(
            f"n_rounds={settings.n_rounds} needs as many training images, "
            f"got {len(data.train_images)}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        if workdir is None:
            workdir = Path(journal) / "projects" if journal is not None else Path(tmp)
        fp = RowJournal.fingerprint("hitl-vs-offline", data, settings, pretrained)
        journal = RowJournal(journal, restart=restart, workdir=workdir, fingerprint=fp)
        return (yield from _run_strategies(data, pretrained, settings, journal.workdir, journal))


def _run_strategies(data, pretrained, settings, workdir: Path, journal=_NO_JOURNAL):
    rows: list[dict] = []
    total = 4 * settings.n_rounds
    for init in ("pretrained", "scratch"):
        start_model, spec = _starting_model(init, pretrained, settings)
        start_ap = _test_ap(start_model, data)
        for mode in ("online", "offline"):
            base = {"mode": mode, "init": init}
            row = {**base, "round": 0, "n_images": 0, "drawn": 0, "drawn_total": 0,
                   "ap50": start_ap, "train_seconds": 0.0}  # fmt: skip
            rows.append(row)
            yield Row("hitl-vs-offline", row)
            rounds = (
                _online_rounds(data, init, spec, settings, workdir, journal)
                if mode == "online"
                else _offline_rounds(data, init, spec, settings, journal)
            )
            for item in rounds:
                if isinstance(item, dict):  # a row journalled before an interruption
                    rows.append(item)
                    yield Row("hitl-vs-offline", item)
                    continue
                if not isinstance(item, tuple):
                    yield item  # a training event
                    continue
                round_no, drawn, drawn_total, seconds, model = item
                done = sum(r["round"] > 0 for r in rows)
                yield Progress("hitl-vs-offline", done, total, f"{mode}/{init} round {round_no}")
                row = {**base, "round": round_no, "n_images": round_no, "drawn": drawn,
                       "drawn_total": drawn_total, "ap50": _test_ap(model, data),
                       "train_seconds": round(float(seconds), 2)}  # fmt: skip
                journal.put(f"{mode}-{init}-r{round_no:03d}", row)
                rows.append(row)
                yield Row("hitl-vs-offline", row)
    yield Progress("hitl-vs-offline", total, total, "done")
    return rows
