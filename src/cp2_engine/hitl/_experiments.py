"""The Cellpose 2.0 paper's experiments (Fig. 3 and Fig. 5), as resumable generators.

``learning-curve`` (Fig. 3)
    Offline training on random subsets of the pool (sizes ``subset_sizes``, ``n_seeds`` subsets
    per size up to 4 images, ``n_seeds_large`` above), from the pretrained model and from
    scratch; test AP@0.5 and AP@0.75 against the number of training ROIs. Subset 0 of each
    whole-image size is the first N images of the pool's order, so these points are also the
    offline strategies of ``hitl-vs-offline`` (computed once when both run on one journal).
``hitl-vs-offline`` (Fig. 5)
    Five strategies on the same pool order and seeds: ``pretrained_online_random`` (HITL: the
    current model segments the next image of the order, the
    :class:`~cp2_engine.hitl.SimulatedAnnotator` corrects it, the starting model is fine-tuned
    in online mode on all corrected images so far), ``pretrained_online_active`` (the same over
    the whole pool, the next image picked by expected accuracy gain per expected human ROI:
    :mod:`cp2_engine.hitl._cost`), ``scratch_online`` (HITL from random weights),
    ``pretrained_offline`` and ``scratch_offline`` (every ROI of the first N images drawn by
    hand, offline training, for each N of ``offline_n``). Human ROIs = drawn + fixed
    (cumulative). Round 0 of an online strategy is its starting model.

Training follows the paper: online 100 epochs, offline 300 epochs, batch 8, 224-px crops,
learning rate 0.1 from a pretrained model and 0.2 from scratch, at least 8 images per epoch
(resampled), weight decay 1e-4. Every finished point (an offline training, an online round, a
starting model's AP) is one file of the journal folder, keyed by a digest of everything it
depends on (data, starting model, settings, annotator), so a killed run continues with the same
call, points are shared between the experiments and between runs, and ``report_only`` collects
the finished points without training. Online strategies are HITL projects in ``workdir`` (an
interrupted round resumes from its last training checkpoint).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cp2_engine.hitl._annotator import KEEP_IOU, SimulatedAnnotator
from cp2_engine.hitl._experiment_data import ExperimentData, synthetic_data
from cp2_engine.hitl._journal import (
    RowJournal,
    digest_data,
    digest_start,
    finished_model,
    online_round,
    point_key,
    reusable_rounds,
)
from cp2_engine.util import ProgressEvent, drain

logger = logging.getLogger(__name__)

__all__ = [
    "HITL_STRATEGIES",
    "ExperimentSettings",
    "Progress",
    "Row",
    "iter_hitl_vs_offline",
    "iter_learning_curve",
    "pretrain_synthetic",
]

#: The strategies of ``hitl-vs-offline``, in run order (the comparisons the claim rests on first).
HITL_STRATEGIES = ("pretrained_online_random", "pretrained_offline", "scratch_offline",
                   "pretrained_online_active", "scratch_online")  # fmt: skip
_JOURNAL_FORMAT = "cp2-experiment-points-1"


@dataclass(frozen=True)
class ExperimentSettings:
    """Sizes of an experiment run. The defaults are the paper's; :meth:`quick` is a smoke run.

    Parameters
    ----------
    n_epochs_online, n_epochs_offline : int
        Epochs of one online (HITL) retraining and of one offline training (100, 300).
    bsize, batch_size, min_images_per_epoch : int
        Training crop size, batch size and images per epoch (224, 8, 8).
    n_rounds : int
        Online rounds (one image each) of ``hitl-vs-offline`` (10).
    subset_sizes : tuple of float
        Learning-curve subset sizes in images (1, 2, 4, 8, 16; 0.25 / 0.5 = a crop of one).
    n_seeds, n_seeds_large : int
        Random subsets per size up to 4 images (3) and above (1).
    offline_n : tuple of int
        Training-set sizes of the offline strategies of ``hitl-vs-offline`` (1, 2, 4, 8, 16).
    keep_iou : float
        The simulated annotator's keep threshold (:data:`~cp2_engine.hitl.KEEP_IOU`; 0.5 = the
        lenient annotator).
    strategies : tuple of str
        Which of :data:`HITL_STRATEGIES` to run.
    pretrain_epochs : int
        Epochs of the synthetic stand-in pretrained model (when no model is given).
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
    n_rounds: int = 10
    subset_sizes: tuple = (1, 2, 4, 8, 16)
    n_seeds: int = 3
    n_seeds_large: int = 1
    offline_n: tuple = (1, 2, 4, 8, 16)
    keep_iou: float = KEEP_IOU
    strategies: tuple = HITL_STRATEGIES
    pretrain_epochs: int = 300
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        names = ("n_epochs_online", "n_epochs_offline", "bsize", "batch_size",
                 "min_images_per_epoch", "n_rounds", "n_seeds", "n_seeds_large",
                 "pretrain_epochs")  # fmt: skip
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        unknown = set(self.strategies) - set(HITL_STRATEGIES)
        if unknown or not self.strategies:
            raise ValueError(f"strategies must be some of {HITL_STRATEGIES}, got {unknown}")
        if any(n < 1 or n != int(n) for n in self.offline_n):
            raise ValueError(f"offline_n must be whole numbers >= 1, got {self.offline_n}")
        keep = SimulatedAnnotator(keep_iou=self.keep_iou).keep_iou  # checked; None -> 0.5
        object.__setattr__(self, "keep_iou", float(keep))
        object.__setattr__(self, "subset_sizes", tuple(self.subset_sizes))
        object.__setattr__(self, "offline_n", tuple(int(n) for n in self.offline_n))
        object.__setattr__(self, "strategies", tuple(self.strategies))

    @classmethod
    def quick(cls, **overrides: Any) -> ExperimentSettings:
        """Small settings for a smoke run on 2 CPU cores (minutes).

        Examples
        --------
        >>> ExperimentSettings.quick(n_rounds=1).n_rounds
        1
        """
        base = {"n_epochs_online": 4, "n_epochs_offline": 6, "bsize": 64, "batch_size": 4,
                "min_images_per_epoch": 4, "n_rounds": 2, "subset_sizes": (1, 2),
                "n_seeds": 2, "offline_n": (1, 2), "pretrain_epochs": 8,
                "device": "cpu"}  # fmt: skip
        return cls(**{**base, **overrides})

    def train_config(self, mode: str):
        """The TrainConfig of an online or offline training run (learning rate: the default,
        0.1 from a pretrained model and 0.2 from scratch).

        Examples
        --------
        >>> ExperimentSettings().train_config("offline").n_epochs
        300
        """
        from cp2_engine.training import TrainConfig

        epochs = self.n_epochs_online if mode == "online" else self.n_epochs_offline
        return TrainConfig(mode=mode, n_epochs=epochs, bsize=self.bsize,
                           batch_size=self.batch_size,
                           min_images_per_epoch=self.min_images_per_epoch,
                           warmup_epochs=min(10, epochs // 2), min_train_masks=1,
                           save_every=max(1, min(10, epochs)), seed=self.seed,
                           device=self.device)  # fmt: skip


@dataclass(frozen=True)
class Progress(ProgressEvent):
    """A step of ``experiment``: ``done`` of ``total`` units (points or rounds)."""

    experiment: str


@dataclass(frozen=True)
class Row:
    """One result row (also part of the experiment's return value)."""

    experiment: str
    values: dict


def _n_rois(labels) -> int:
    return int(sum(len(np.unique(lab[lab > 0])) for lab in labels))


class _Runner:
    """What the points of a run share: data, starting models, journal, work folder."""

    def __init__(self, data: ExperimentData, pretrained, settings, journal, workdir, report_only):
        self.data, self.settings, self.report_only = data, settings, report_only
        self.journal, self.workdir = journal, Path(workdir)
        self.spec = {"pretrained": str(pretrained), "scratch": "scratch"}
        self.data_fp = digest_data(data)
        self.start_fp = {"pretrained": digest_start(pretrained), "scratch": "scratch"}
        self.names = data.names()

    def evaluate(self, model) -> tuple[float, float]:
        """Mean AP@0.5 and AP@0.75 of ``model`` on the test images."""
        from cp2_engine.metrics import average_precision

        d = self.data
        preds = [model.segment(img, diameter=d.diameter).masks for img in d.test_images]
        ap = average_precision(d.test_labels, preds, thresholds=(0.5, 0.75)).mean_ap
        return round(float(ap[0]), 4), round(float(ap[1]), 4)

    def start_aps(self, init: str) -> tuple[float, float] | None:
        """Test APs of a starting model (journalled), or None in report-only mode."""
        from cp2_engine.inference import Model

        key = f"start-{init}-{point_key(self.data_fp, self.start_fp[init], self.settings.seed)}"
        if (row := self.journal.get(key)) is not None:
            return row["ap50"], row["ap75"]
        if self.report_only:
            return None
        dev, seed = self.settings.device, self.settings.seed
        model = (Model.random(seed=seed, device=dev) if init == "scratch"
                 else Model.load(self.spec[init], device=dev))  # fmt: skip
        ap50, ap75 = self.evaluate(model)
        self.journal.put(key, {"init": init, "ap50": ap50, "ap75": ap75})
        return ap50, ap75

    def offline_point(self, init: str, subset) -> Generator[Any, None, dict | None]:
        """Offline training on ``subset`` of the pool (journalled); None when not done and
        ``report_only``. Yields the training events."""
        from cp2_engine.inference import Model
        from cp2_engine.training import iter_train_resumable, take_subset

        cfg = self.settings.train_config("offline")
        key = point_key(self.data_fp, self.start_fp[init], repr(cfg), subset.indices,
                        subset.region)  # fmt: skip
        key = f"offline-{init}-{key}"
        if (row := self.journal.get(key)) is not None or self.report_only:
            return row
        images, labels = take_subset(self.data.train_images, self.data.train_labels, subset)
        save = self.workdir / "offline" / key / "model"
        t0 = time.perf_counter()
        result = yield from iter_train_resumable(self.spec[init], images, labels, config=cfg,
                                                 save_path=save, fingerprint=key)  # fmt: skip
        seconds = time.perf_counter() - t0
        ap50, ap75 = self.evaluate(Model.from_net(result.net, name=key))
        row = {"init": init, "n_images": len(images), "n_rois": _n_rois(labels),
               "images": [self.names[i] for i in subset.indices],
               "region": list(subset.region), "ap50": ap50, "ap75": ap75,
               "train_seconds": round(seconds, 1)}  # fmt: skip
        self.journal.put(key, row)
        shutil.rmtree(save.parent, ignore_errors=True)  # the row is the result
        return row

    def project(self, tag: str, init: str, n_pool: int):
        """The HITL project of an online strategy (resumed when its folder holds one)."""
        from cp2_engine.hitl._project import HitlProject

        folder = self.workdir / tag
        if (folder / "project.json").is_file():
            return HitlProject.open(folder, device=self.settings.device)
        d = self.data
        return HitlProject.create(
            folder, images=d.train_images[:n_pool], ground_truth=d.train_labels[:n_pool],
            names=self.names[:n_pool], initial_model=self.spec[init],
            train_config=self.settings.train_config("online"), diameter=d.diameter,
            device=self.settings.device,
        )  # fmt: skip

    def online_rows(self, strategy: str) -> Generator[Any, None, None]:
        """Rows of one online strategy (round 0 = the starting model), training what is missing.

        Long function: one loop that resumes, journals and yields every round in order.
        """
        s, init = self.settings, strategy.split("_")[0]
        active = strategy.endswith("active")
        n_pool = len(self.data.train_images) if active else s.n_rounds
        fp = point_key(self.data_fp, self.start_fp[init], repr(s.train_config("online")),
                       s.keep_iou, n_pool, strategy)  # fmt: skip
        tag = f"{strategy}-keep{s.keep_iou:g}-{fp}"
        base = {"experiment": "hitl-vs-offline", "strategy": strategy, "keep_iou": s.keep_iou}
        start = self.start_aps(init)
        if start is None:
            return
        zero = dict.fromkeys(("n_images", "drawn", "fixed", "human_rois"), 0)
        yield {**base, "step": 0, **zero, "image": None, "ap50": start[0], "ap75": start[1],
               "train_seconds": 0.0}  # fmt: skip
        annotator, project, human = SimulatedAnnotator(keep_iou=s.keep_iou), None, 0
        reuse = s.n_rounds if self.report_only else reusable_rounds(
            self.journal, tag, s.n_rounds, self.workdir / tag)  # fmt: skip
        for step in range(1, s.n_rounds + 1):
            key = f"{tag}-r{step:03d}"
            if step <= reuse and (row := self.journal.get(key)) is not None:
                human = row["human_rois"]
                yield row
                continue
            if self.report_only:
                return
            text = f"{strategy} round {step}"
            yield Progress("hitl-vs-offline", done=step - 1, total=s.n_rounds, message=text)
            project = project or self.project(tag, init, n_pool)
            name, drawn, fixed, seconds, model = yield from online_round(
                project, step, annotator, self.journal, key, self._chooser(active)
            )
            human += drawn + fixed
            ap50, ap75 = self.evaluate(model)
            row = {**base, "step": step, "n_images": step, "image": name, "drawn": drawn,
                   "fixed": fixed, "human_rois": human, "ap50": ap50, "ap75": ap75,
                   "train_seconds": round(float(seconds), 1)}  # fmt: skip
            self.journal.put(key, row)
            yield row

    def _chooser(self, active: bool):
        if not active:
            return lambda project: project.next_image("order")
        keep = self.settings.keep_iou
        return lambda project: project.rank_next_by_cost(keep_iou=keep)[0].name


def _open(data, pretrained, settings, journal, workdir, restart, report_only, tmp):
    journal_obj = RowJournal(journal, restart=restart, fingerprint=_JOURNAL_FORMAT)
    if workdir is None:
        workdir = Path(journal) / "work" if journal is not None else Path(tmp)
    return _Runner(data, pretrained, settings, journal_obj, workdir, report_only)


def _subsets(n: int, settings: ExperimentSettings) -> list:
    """The learning curve's subsets; subset 0 of a whole-image size N = the first N images."""
    from cp2_engine.training import Subset, training_subsets

    out = []
    for size in settings.subset_sizes:
        if size >= 1 and size > n:
            continue
        k = settings.n_seeds if size <= 4 else settings.n_seeds_large
        subs = training_subsets(n, sizes=(size,), n_seeds=k, seed=settings.seed)
        if size >= 1:
            subs[0] = Subset(size=size, seed=0, indices=tuple(range(int(size))))
        out += subs
    return out


def _experiment(name: str, plan, data: ExperimentData, *, pretrained: str | os.PathLike,
                settings: ExperimentSettings | None = None,
                journal: str | os.PathLike | None = None,
                workdir: str | os.PathLike | None = None, restart: bool = False,
                report_only: bool = False) -> Generator[Any, None, list[dict]]:  # fmt: skip
    """The one experiment runner: ``plan(settings, data)`` checks the settings (before the
    journal is opened) and gives ``items(run)``; its dicts become rows (each yielded as a
    :class:`Row`), anything else is passed on; returns the rows."""
    settings = settings or ExperimentSettings()
    items = plan(settings, data)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        run = _open(data, pretrained, settings, journal, workdir, restart, report_only, tmp)
        for item in items(run):
            if isinstance(item, dict):
                rows.append(item)
                yield Row(name, item)
            else:
                yield item  # progress and training events
    return rows


def iter_learning_curve(data: ExperimentData, **options) -> Generator[Any, None, list[dict]]:
    """Test AP against training ROIs, pretrained vs scratch, over random subsets (Fig. 3).

    Parameters
    ----------
    data : ExperimentData
        The pool (in order) and the test images.
    **options
        pretrained (path or model name, required)
            The pretrained starting model (e.g. a generalist that never saw this category).
        settings (ExperimentSettings, optional)
            Sizes (default: the paper's).
        journal (path, optional)
            Folder of finished points (see the module docstring); run again after a kill, the
            same call trains only what is missing. ``restart=True`` discards it first.
        workdir (path, optional)
            Training checkpoints (default ``<journal>/work``, else a temporary folder).
        report_only (bool)
            Train nothing: return the rows of the finished points only.

    Yields
    ------
    Progress, Row, or the training events

    Returns
    -------
    list of dict
        One row per (init, subset): ``experiment, init, size, seed, n_images, n_rois, images,
        region, ap50, ap75, train_seconds``.
    """
    return _experiment("learning-curve", _curve_plan, data, **options)


def _curve_plan(settings: ExperimentSettings, data: ExperimentData):
    subsets = _subsets(len(data.train_images), settings)
    return lambda run: _curve_items(run, subsets)


def _curve_items(run: _Runner, subsets: list):
    total, n_rows = 2 * len(subsets), 0
    for init in ("pretrained", "scratch"):
        for sub in subsets:
            msg = f"{init}: {sub.size} image(s), subset {sub.seed}"
            yield Progress("learning-curve", done=n_rows, total=total, message=msg)
            point = yield from run.offline_point(init, sub)
            if point is not None:
                n_rows += 1
                yield {"experiment": "learning-curve", "size": sub.size, "seed": sub.seed,
                       **point}  # fmt: skip
    yield Progress("learning-curve", done=total, total=total, message="done")


def iter_hitl_vs_offline(data: ExperimentData, **options) -> Generator[Any, None, list[dict]]:
    """The five strategies of the paper's Fig. 5 on one pool order (module docstring).

    Parameters are those of :func:`iter_learning_curve`; ``settings.keep_iou`` is the
    annotator, ``settings.strategies`` which strategies run.

    Returns
    -------
    list of dict
        One row per (strategy, step): ``experiment, strategy, keep_iou, step, n_images,
        drawn, fixed, human_rois, ap50, ap75, train_seconds`` (online rows also ``image``,
        offline rows ``images``). ``step`` is the round (online) or N (offline).
    """
    return _experiment("hitl-vs-offline", _hitl_plan, data, **options)


def _hitl_plan(settings: ExperimentSettings, data: ExperimentData):
    n = len(data.train_images)
    if settings.n_rounds > n or max(settings.offline_n) > n:
        raise ValueError(f"n_rounds={settings.n_rounds} and offline_n={settings.offline_n} "
                         f"need as many pool images, got {n}")  # fmt: skip
    return lambda run: _hitl_items(run, settings)


def _hitl_items(run: _Runner, settings: ExperimentSettings):
    for strategy in (s for s in HITL_STRATEGIES if s in settings.strategies):
        if strategy.endswith("_offline"):
            yield from _offline_rows(run, strategy, settings)
        else:
            yield from run.online_rows(strategy)
    yield Progress("hitl-vs-offline", done=1, total=1, message="done")


def _offline_rows(run: _Runner, strategy: str, settings: ExperimentSettings):
    from cp2_engine.training import Subset

    init = strategy.split("_")[0]
    for n in settings.offline_n:
        yield Progress("hitl-vs-offline", done=0, total=1, message=f"{strategy} N={n}")
        sub = Subset(size=n, seed=0, indices=tuple(range(n)))
        point = yield from run.offline_point(init, sub)
        if point is None:
            continue
        yield {"experiment": "hitl-vs-offline", "strategy": strategy, "keep_iou": None,
               "step": n, "n_images": n, "drawn": point["n_rois"], "fixed": 0,
               "human_rois": point["n_rois"], "ap50": point["ap50"], "ap75": point["ap75"],
               "train_seconds": point["train_seconds"], "images": point["images"]}  # fmt: skip


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
    from cp2_engine.training import iter_train

    recipe = f"{style}|{settings.pretrain_epochs}|{settings.train_config('offline')!r}"
    path = Path(path)
    if finished_model(path, recipe):  # an interrupted `cp2 experiment` run again
        return path
    data = synthetic_data(n_train=8, n_test=0, style=style, seed=settings.seed + 101)
    config = dataclasses.replace(
        settings.train_config("offline"), n_epochs=settings.pretrain_epochs, save_every=10**6
    )
    result = drain(iter_train("scratch", data.train_images, data.train_labels, config=config))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(result.net, path, metadata={"pretrained_on": data.source,
                                           "pretrain_recipe": recipe})  # fmt: skip
    return path
