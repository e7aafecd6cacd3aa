"""The progress events :func:`cp2_engine.training.iter_train` yields and the result it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cp2_engine.training._config import TrainConfig
from cp2_engine.util import ProgressEvent


@dataclass(frozen=True)
class TrainEvent(ProgressEvent):
    """Base class of the events yielded by :func:`iter_train` (and recipe training).

    ``done`` / ``total`` count SGD steps: over the whole run for an epoch run, within the cycle
    for a recipe cycle (``total`` None while a time budget has not fixed it); the recipe's
    :class:`~cp2_engine.recipes.DataPrepared` counts images and
    :class:`~cp2_engine.recipes.Installed` is 1 of 1.
    """


@dataclass(frozen=True)
class TrainStarted(TrainEvent):
    """Training is about to start (after data preparation); ``done`` steps were taken before
    (a resumed run starts at epoch ``start_epoch``, 0-based)."""

    n_images: int
    n_skipped: int
    n_epochs: int
    start_epoch: int
    steps_per_epoch: int
    learning_rate: float
    device: str
    diam_labels: float


@dataclass(frozen=True)
class StepEvent(TrainEvent):
    """SGD step ``done`` (1-based, counted over the whole run) finished.

    ``elapsed`` is the training time in seconds (over every session of a resumed run);
    ``epoch`` is the epoch the step belongs to (0-based) in an epoch-based run, None in a
    step-based one (a bundled-model recipe cycle).
    """

    tick: ClassVar[bool] = True

    loss: float
    lr: float
    elapsed: float
    epoch: int | None = None


@dataclass(frozen=True)
class EpochEvent(TrainEvent):
    """Epoch ``epoch`` (0-based) finished; ``test_loss`` is None when not evaluated this
    epoch; ``eta`` is the estimated seconds left."""

    epoch: int
    loss: float
    lr: float
    elapsed: float
    eta: float
    test_loss: float | None


@dataclass(frozen=True)
class CheckpointSaved(TrainEvent):
    """A checkpoint was written after ``done`` steps (``epoch``: the last finished epoch of an
    epoch-based run, None in a step-based one); ``path`` is the model file of an epoch run
    (its checkpoint is ``<path>.ckpt``) or the checkpoint of a recipe cycle."""

    path: Path
    epoch: int | None = None


@dataclass(frozen=True)
class TrainResult:
    """What :func:`iter_train` returns.

    Attributes
    ----------
    net : CPnet
        The trained network (on the training device, in eval mode).
    model_path : Path or None
        Saved weights (None when no ``save_path`` was given).
    losses : tuple of float
        Mean training loss of every epoch (including epochs before a resume).
    test_losses : tuple
        ``(epoch, loss)`` pairs.
    diam_labels : float
        Mean object diameter of the training images (stored in the net).
    n_images, n_skipped : int
        Images used and skipped (too few ROIs).
    config : TrainConfig
        The resolved configuration.
    """

    net: Any
    model_path: Path | None
    losses: tuple
    test_losses: tuple
    diam_labels: float
    n_images: int
    n_skipped: int
    config: TrainConfig
