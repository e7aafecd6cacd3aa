"""The progress events :func:`cp2_engine.training.iter_train` yields and the result it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cp2_engine.training._config import TrainConfig


@dataclass(frozen=True)
class TrainEvent:
    """Base class of the events yielded by :func:`iter_train`."""


@dataclass(frozen=True)
class TrainStarted(TrainEvent):
    """Training is about to start (after data preparation)."""

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
    """One SGD step finished."""

    epoch: int
    step: int
    loss: float
    lr: float
    elapsed: float


@dataclass(frozen=True)
class EpochEvent(TrainEvent):
    """One epoch finished; ``test_loss`` is None when not evaluated this epoch."""

    epoch: int
    loss: float
    lr: float
    elapsed: float
    eta: float
    test_loss: float | None


@dataclass(frozen=True)
class CheckpointSaved(TrainEvent):
    """The model (``path``) and its ``.ckpt`` were written after ``epoch``."""

    path: Path
    epoch: int


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
