"""The progress events of recipe training and the results it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cp2_engine.recipes._data import BundledRecipe
from cp2_engine.training import TrainEvent


@dataclass(frozen=True)
class DataPrepared(TrainEvent):
    """The training images are ready (``n_images`` over all sources)."""

    n_images: int
    seconds: float


@dataclass(frozen=True)
class CycleStarted(TrainEvent):
    """Cycle ``cycle`` (1-based, of ``n_cycles``) starts or resumes at ``start_step``."""

    cycle: int
    n_cycles: int
    start_step: int
    steps: int | None
    device: str
    init: str | None


@dataclass(frozen=True)
class CycleFinished(TrainEvent):
    """Cycle ``cycle`` is done (``skipped``: it was finished by an earlier call)."""

    cycle: int
    steps: int
    loss: float
    seconds: float
    export: Path
    skipped: bool


@dataclass(frozen=True)
class CycleResult:
    """One finished cycle: its steps, per-step losses, training seconds and exported weights."""

    cycle: int
    steps: int
    losses: tuple
    seconds: float
    export: Path
    hardware: str
    init: dict | None = None


@dataclass(frozen=True)
class RecipeResult:
    """What :func:`iter_train_recipe` returns.

    Attributes
    ----------
    recipe : BundledRecipe
    out : Path
        The training folder.
    cycles : tuple of CycleResult
    installed : InstallResult or None
        Set when ``install=True``.
    """

    recipe: BundledRecipe
    out: Path
    cycles: tuple
    installed: Any = None

    @property
    def export(self) -> Path:
        """The last cycle's exported (EMA) weights."""
        return self.cycles[-1].export

    @property
    def losses(self) -> tuple:
        """Per-step losses of every cycle, in order."""
        return tuple(loss for c in self.cycles for loss in c.losses)
