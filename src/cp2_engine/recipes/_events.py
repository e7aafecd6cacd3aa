"""The progress events of recipe training and the results it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cp2_engine.recipes._data import BundledRecipe
from cp2_engine.training import TrainEvent


@dataclass(frozen=True)
class DataPrepared(TrainEvent):
    """The training images are ready: ``done`` = ``total`` = images over all sources, prepared
    in ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class CycleStarted(TrainEvent):
    """Cycle ``cycle`` (1-based, of ``n_cycles``) starts, or resumes after ``done`` of its
    ``total`` steps (None: a time budget fixes them after the probe steps)."""

    cycle: int
    n_cycles: int
    device: str
    init: str | None


@dataclass(frozen=True)
class CycleFinished(TrainEvent):
    """Cycle ``cycle`` is done after ``done`` (= ``total``) steps (``skipped``: it was finished
    by an earlier call); ``loss`` is the mean of its last 50 step losses."""

    cycle: int
    loss: float
    seconds: float
    export: Path
    skipped: bool


def cycle_finished(cycle: int, steps: int, loss: float, seconds: float, export: Path, *,
                   skipped: bool) -> CycleFinished:  # fmt: skip
    """The :class:`CycleFinished` event of a cycle of ``steps`` steps, with its message.

    Examples
    --------
    >>> cycle_finished(2, 100, 0.5, 9.0, Path("w"), skipped=True).message
    'cycle 2 already finished: 100 steps, loss 0.5000, weights w'
    """
    state = "already finished" if skipped else "finished"
    text = f"cycle {cycle} {state}: {steps} steps, loss {loss:.4f}, weights {export}"
    return CycleFinished(cycle, loss, seconds, export, skipped, done=steps, total=steps,
                         message=text)  # fmt: skip


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
