"""Training files: the model with its resume checkpoint, the loss log and plot, and resume.

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
import torch

from cp2_engine.training._config import TrainConfig
from cp2_engine.training._events import CheckpointSaved
from cp2_engine.training._prepare import _Data
from cp2_engine.util import atomic_write_file

logger = logging.getLogger(__name__)

CKPT_FORMAT = "cp2-train-checkpoint"
CKPT_VERSION = 1


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


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a training checkpoint written by :func:`iter_train`.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is corrupt or not a cp2 training checkpoint.

    Examples
    --------
    >>> load_checkpoint("/nonexistent.ckpt")
    Traceback (most recent call last):
    ...
    FileNotFoundError: training checkpoint not found: /nonexistent.ckpt
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, EOF, runtime) on bad files
        raise ValueError(f"training checkpoint {path} is corrupt or unreadable: {err}") from err
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not a cp2 training checkpoint (no '{CKPT_FORMAT}' marker)")
    return state


def _save_checkpoint(net, optimizer, scaler, state: dict, model_path: Path, config) -> None:
    from cp2_engine.network import save_model

    meta = {
        "channels": list(config.channels),
        "training": {k: state[k] for k in ("epoch", "n_images", "diam_labels")}
        | {"mode": config.mode, "n_epochs": config.n_epochs, "seed": config.seed},
    }
    save_model(net, model_path, metadata=meta)
    ckpt = dict(state, format=CKPT_FORMAT, version=CKPT_VERSION)
    ckpt["net"] = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    ckpt["optimizer"] = optimizer.state_dict()
    ckpt["scaler"] = scaler.state_dict() if scaler.is_enabled() else {}
    ckpt["config"] = dataclasses.asdict(config)
    _atomic_save(ckpt, checkpoint_path(model_path), torch.save)


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
    """Mutable state of one run (kept private; checkpoints store it as a dict)."""

    epoch: int = -1
    losses: list = dataclasses.field(default_factory=list)
    test_losses: list = dataclasses.field(default_factory=list)

    def record(self, data: _Data, diam_labels: float) -> dict:
        return {
            "epoch": self.epoch,
            "losses": list(self.losses),
            "test_losses": [list(t) for t in self.test_losses],
            "n_images": len(data.x),
            "diam_labels": diam_labels,
            "rng": {"kind": "numpy default_rng([seed, epoch])", "next_epoch": self.epoch + 1},
        }


def _resume(path, net, optimizer, scaler, data: _Data, config: TrainConfig) -> _Run:
    state = load_checkpoint(path)
    if state["n_images"] != len(data.x):
        raise ValueError(
            f"checkpoint {path} was trained on {state['n_images']} images, got {len(data.x)}"
        )
    if state["epoch"] >= config.n_epochs:
        raise ValueError(
            f"checkpoint {path} already ran {state['epoch'] + 1} epochs "
            f"(n_epochs={config.n_epochs})"
        )
    for key in ("seed", "batch_size", "learning_rate", "mode", "bsize"):
        if state["config"].get(key) != getattr(config, key):
            logger.warning("resuming with %s=%r (checkpoint had %r): the run will differ",
                           key, getattr(config, key), state["config"].get(key))  # fmt: skip
    try:
        net.load_state_dict(state["net"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"checkpoint {path} does not match this network: {err}") from err
    if scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    logger.info("resuming from %s after epoch %d", path, state["epoch"])
    return _Run(state["epoch"], list(state["losses"]), [tuple(t) for t in state["test_losses"]])


def _save(net, optimizer, scaler, run, data, config, model_path, diam_labels):
    _save_checkpoint(net, optimizer, scaler, run.record(data, diam_labels), model_path, config)
    _plot_losses(run.losses, run.test_losses, Path(str(model_path) + "_loss.png"))
    return CheckpointSaved(path=model_path, epoch=run.epoch)
