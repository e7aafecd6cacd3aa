"""Files of an epoch run: the model with its resume checkpoint, the loss log and plot, resume.

The checkpoint itself is the driver's one format (:func:`cp2_engine.training.load_checkpoint`).
Files are only ever replaced atomically, so the last saved model stays intact and loadable when
training is cancelled or fails.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cp2_engine.training._config import TrainConfig
from cp2_engine.training._driver import TrainState, load_checkpoint
from cp2_engine.training._prepare import _Data
from cp2_engine.util import atomic_write_file

logger = logging.getLogger(__name__)


def _atomic_save(obj, path: Path, writer) -> None:
    """``writer(obj, fh)`` through :func:`cp2_engine.util.atomic_write_file` (temp file, fsync,
    ``os.replace``; a full disk raises :class:`~cp2_engine.util.DiskFullError` naming ``path``)."""
    atomic_write_file(path, lambda fh: writer(obj, fh))


def checkpoint_path(model_path: str | os.PathLike) -> Path:
    """Path of the resume checkpoint that belongs to a model file (``<model>.ckpt``).

    Examples
    --------
    >>> checkpoint_path("models/mine").name
    'mine.ckpt'
    """
    return Path(str(model_path) + ".ckpt")


def _plot_losses(losses, test_losses, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.arange(len(losses)), losses, label="train")
    if test_losses:
        ep, tl = zip(*test_losses)
        ax.plot(ep, tl, "o-", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    _atomic_save(fig, path, lambda f, fh: f.savefig(fh, format="png"))


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


@dataclass
class _Run:
    """The epoch records of one run (checkpoints store them beside the driver's state)."""

    epoch: int = -1
    losses: list = dataclasses.field(default_factory=list)
    test_losses: list = dataclasses.field(default_factory=list)


def _resume(path, state: TrainState, data: _Data, config: TrainConfig, per_epoch: int) -> _Run:
    """Restore ``state`` from the checkpoint at ``path``; return the epoch records."""
    ckpt = load_checkpoint(path)
    if ckpt["epoch"] is None:
        raise ValueError(f"{path} is a step-based (recipe) checkpoint, not an epoch run's")
    if ckpt["n_images"] != len(data.x):
        raise ValueError(
            f"checkpoint {path} was trained on {ckpt['n_images']} images, got {len(data.x)}"
        )
    if ckpt["epoch"] >= config.n_epochs:
        raise ValueError(
            f"checkpoint {path} already ran {ckpt['epoch'] + 1} epochs "
            f"(n_epochs={config.n_epochs})"
        )
    if ckpt["step"] != (ckpt["epoch"] + 1) * per_epoch:
        raise ValueError(f"checkpoint {path} holds {ckpt['step']} steps, not "
                         f"{ckpt['epoch'] + 1} epochs of {per_epoch}")  # fmt: skip
    for key in ("seed", "batch_size", "learning_rate", "mode", "bsize", "precision"):
        if ckpt["config"].get(key) != getattr(config, key):
            logger.warning("resuming with %s=%r (checkpoint had %r): the run will differ",
                           key, getattr(config, key), ckpt["config"].get(key))  # fmt: skip
    state.restore(ckpt, path)
    logger.info("resuming from %s after epoch %d", path, ckpt["epoch"])
    return _Run(ckpt["epoch"], list(ckpt["epoch_losses"]), [tuple(t) for t in ckpt["test_losses"]])


def _save(state: TrainState, run: _Run, data: _Data, config: TrainConfig, model_path: Path,
          diam_labels: float) -> None:  # fmt: skip
    """Write the model, its checkpoint and the loss plot after epoch ``run.epoch``."""
    from cp2_engine.network import save_model

    meta = {
        "channels": list(config.channels),
        "training": {"epoch": run.epoch, "n_images": len(data.x), "diam_labels": diam_labels,
                     "mode": config.mode, "n_epochs": config.n_epochs, "seed": config.seed},
    }  # fmt: skip
    save_model(state.net, model_path, metadata=meta)
    state.save_checkpoint(
        checkpoint_path(model_path), epoch=run.epoch, epoch_losses=list(run.losses),
        test_losses=[list(t) for t in run.test_losses], n_images=len(data.x),
        diam_labels=diam_labels, config=dataclasses.asdict(config),
    )  # fmt: skip
    _plot_losses(run.losses, run.test_losses, Path(str(model_path) + "_loss.png"))
