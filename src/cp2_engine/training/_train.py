"""Train or fine-tune a CPnet: a generator of progress events, checkpoints and resume.

:func:`iter_train` does the work and *yields* typed events (:class:`TrainStarted`,
:class:`StepEvent`, :class:`EpochEvent`, :class:`CheckpointSaved`); its ``return`` value (the
``StopIteration.value``) is a :class:`TrainResult`. :func:`train` drains it. Closing the generator
(``gen.close()``, e.g. a GUI's cancel button) stops at the next yield; files are only ever
replaced atomically, so the last saved model stays intact and loadable.

Recipe (Cellpose 2.0 paper defaults, see :class:`TrainConfig`): images are converted to the
2-channel network input and normalised once; labels are turned into unit flows once; images with
fewer than ``min_train_masks`` ROIs are skipped. Every epoch draws ``max(n_images,
min_images_per_epoch)`` images, augments them (``_augment.py``) into ``bsize`` crops
and takes SGD steps on :func:`cp2_engine.training.flow_loss`.

Randomness is local: epoch ``e`` draws from ``numpy.random.default_rng([seed, e])`` and a new
network is initialised inside :func:`torch.random.fork_rng`, so the global numpy/torch RNGs are
untouched and a resumed run replays exactly the epochs an uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.segmentation import relabel_sequential

from cp2_engine.io import give_default_permissions
from cp2_engine.network import cpu_has_native_bf16, resolve_device, use_channels_last
from cp2_engine.training._augment import random_rotate_and_resize
from cp2_engine.training._losses import flow_loss
from cp2_engine.util import drain

logger = logging.getLogger(__name__)

CKPT_FORMAT = "cp2-train-checkpoint"
CKPT_VERSION = 1
MIN_DIAMETER = 5.0
_MODES = ("online", "offline")


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class TrainConfig:
    """Training settings (frozen; change with :func:`dataclasses.replace`).

    Parameters
    ----------
    mode : {"online", "offline"}
        ``online`` = human-in-the-loop retraining (100 epochs, no annealing); ``offline`` = full
        training (300 epochs, learning rate halved every ``n_epochs / 60`` epochs over the last
        sixth of training: for 300 epochs, every 5 epochs after epoch 250).
    n_epochs : int or None
        None = 100 (online) or 300 (offline).
    learning_rate : float or None
        None = 0.1 when fine-tuning a given model, 0.2 when training from scratch.
    weight_decay, momentum : float
        SGD settings (1e-4, 0.9).
    batch_size : int
        Crops per SGD step.
    min_images_per_epoch : int
        Images drawn per epoch when there are fewer training images (drawn with replacement, as
        concatenated random permutations so every image is used equally often).
    warmup_epochs : int
        The learning rate rises linearly from 0 (epoch 0) to ``learning_rate`` (this epoch).
    min_train_masks : int
        Images with fewer ROIs are skipped (and counted).
    bsize : int
        Side of the square training crops (multiple of 16).
    scale_range : float or None
        Relative scale jitter; None = 0.5 with ``rescale`` and 1.0 without.
    rescale : bool
        Scale every image so its median object diameter lands near the net's ``diam_mean``.
    channels : (int, int)
        Cellpose ``[chan, chan2]`` used to turn user images into the 2-channel input.
    normalize : bool
        1-99 percentile normalisation of each channel (as at inference).
    seed : int
        Seed of all training randomness (init, sampling, augmentation).
    save_every : int
        Save the model and a checkpoint every this many epochs (and at the end).
    test_every : int
        Compute the test loss every this many epochs (and at the end) when test data is given.
    device : str
        "auto", "cpu", "cuda", "cuda:N" or "mps".
    amp : bool
        float16 autocast with gradient scaling on CUDA (ignored elsewhere).
    bf16 : bool or None
        bfloat16 autocast on the CPU. None (default): on where the CPU computes bfloat16
        natively (AVX-512 BF16 or AMX), off elsewhere. A whole HITL round in bf16 (100 epochs,
        ``benchmarks/bench_bf16_round.py``) ended at the same loss as fp32 (0.1629 vs 0.1627 over
        the last 10 epochs, moving averages never more than 0.0011 apart) and the same test AP,
        2.6x faster on 2 cores.
    channels_last : bool or None
        Use the channels-last memory format for the net and its input. None (default): on the
        CPU only, where a training step is about 8% faster with it (benchmarks/bench_train.py).

    Examples
    --------
    >>> cfg = TrainConfig(mode="offline").resolved(pretrained=False)
    >>> cfg.n_epochs, cfg.learning_rate, cfg.scale_range
    (300, 0.2, 0.5)
    """

    mode: str = "online"
    n_epochs: int | None = None
    learning_rate: float | None = None
    weight_decay: float = 1e-4
    momentum: float = 0.9
    batch_size: int = 8
    min_images_per_epoch: int = 8
    warmup_epochs: int = 10
    min_train_masks: int = 5
    bsize: int = 224
    scale_range: float | None = None
    rescale: bool = True
    channels: tuple = (0, 0)
    normalize: bool = True
    seed: int = 0
    save_every: int = 10
    test_every: int = 10
    device: str = "auto"
    amp: bool = True
    bf16: bool | None = None
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        _check_int(self, "batch_size", "min_images_per_epoch", "save_every", "test_every", low=1)
        _check_int(self, "warmup_epochs", "min_train_masks", "seed", low=0)
        if self.n_epochs is not None:
            _check_int(self, "n_epochs", low=1)
        if self.learning_rate is not None and not (
            math.isfinite(self.learning_rate) and self.learning_rate > 0
        ):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not isinstance(self.bsize, int) or self.bsize < 16 or self.bsize % 16:
            raise ValueError(f"bsize must be a positive multiple of 16, got {self.bsize!r}")
        if self.scale_range is not None and not 0 <= self.scale_range < 2:
            raise ValueError(f"scale_range must be None or in [0, 2), got {self.scale_range}")
        if len(tuple(self.channels)) != 2:
            raise ValueError(f"channels must be a pair [chan, chan2], got {self.channels!r}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string such as 'auto', got {self.device!r}")

    def resolved(self, *, pretrained: bool) -> TrainConfig:
        """Return a copy with the automatic (None) defaults filled in.

        Examples
        --------
        >>> TrainConfig().resolved(pretrained=True).learning_rate
        0.1
        """
        return dataclasses.replace(
            self,
            n_epochs=self.n_epochs or (100 if self.mode == "online" else 300),
            learning_rate=self.learning_rate or (0.1 if pretrained else 0.2),
            scale_range=self.scale_range
            if self.scale_range is not None
            else (0.5 if self.rescale else 1.0),
        )


def _check_int(cfg, *names: str, low: int) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def learning_rate_schedule(config: TrainConfig) -> np.ndarray:
    """Learning rate of every epoch.

    Linear warm-up from 0 over ``warmup_epochs``; in offline mode the last sixth of the epochs
    (``round(n_epochs / 6)``) is split into blocks of ``max(1, tail // 10)`` epochs and the rate
    halves at each block (300 epochs: halve every 5 epochs from epoch 250).

    Examples
    --------
    >>> lr = learning_rate_schedule(TrainConfig(mode="offline", learning_rate=0.2, n_epochs=300))
    >>> float(lr[0]), float(lr[10]), float(lr[249]), float(lr[250]), float(lr[255])
    (0.0, 0.2, 0.2, 0.1, 0.05)
    """
    if config.n_epochs is None or config.learning_rate is None:
        config = config.resolved(pretrained=config.learning_rate is not None)
    n, lr = config.n_epochs, config.learning_rate
    epochs = np.arange(n)
    rates = np.full(n, lr, dtype=np.float64)
    if config.warmup_epochs > 0:
        rates = np.where(epochs < config.warmup_epochs, lr * epochs / config.warmup_epochs, rates)
    tail = round(n / 6)
    if config.mode == "offline" and tail > 0:
        start, block = n - tail, max(1, tail // 10)
        halvings = (epochs - start) // block + 1
        rates = np.where(epochs >= start, lr * 0.5 ** np.maximum(halvings, 0), rates)
    return rates


# ----------------------------------------------------------------------------- events / result
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


# ----------------------------------------------------------------------------- data preparation
@dataclass(frozen=True)
class _Data:
    x: list
    labels: list
    flows: list
    diameters: np.ndarray
    n_skipped: int


def _network_input(image, channels, normalize: bool, index: int) -> np.ndarray:
    from cp2_engine.inference import convert_image

    arr = np.asarray(image)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"images[{index}] contains NaN or infinite values")
    try:
        return convert_image(arr, channels=channels, normalize=normalize)
    except (ValueError, TypeError) as err:
        raise type(err)(f"images[{index}]: {err}") from err


def _check_labels(lab, shape, index: int) -> np.ndarray:
    lab = np.asarray(lab)
    if lab.ndim != 2 or not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
        raise ValueError(
            f"labels[{index}] must be a 2-D integer array, got {lab.dtype} {lab.shape}"
        )
    if lab.shape != shape:
        raise ValueError(f"labels[{index}] has shape {lab.shape} but its image is {shape}")
    if lab.min() < 0:
        raise ValueError(f"labels[{index}] has negative values; expected 0 = background, ids > 0")
    return relabel_sequential(lab.astype(np.int64))[0]


def _prepare(images, labels, config: TrainConfig, *, min_masks: int, what: str) -> _Data:
    from cp2_engine.metrics import diameters
    from cp2_engine.postprocess import masks_to_flows

    if images is None or labels is None or len(images) == 0:
        raise ValueError(f"{what}: expected a non-empty list of images with labels")
    if len(images) != len(labels):
        raise ValueError(f"{what}: got {len(images)} images but {len(labels)} label images")
    xs, labs, flows, diams, skipped = [], [], [], [], 0
    for i, (img, lab) in enumerate(zip(images, labels)):
        x = _network_input(img, config.channels, config.normalize, i)
        lab = _check_labels(lab, x.shape[-2:], i)
        n_masks = int(lab.max())
        if n_masks < min_masks:
            skipped += 1
            continue
        xs.append(x)
        labs.append(lab)
        flows.append(np.asarray(masks_to_flows(lab), dtype=np.float32))
        diams.append(max(MIN_DIAMETER, diameters(lab)[0]))
    if skipped:
        logger.warning(
            "%s: skipped %d of %d images with < %d ROIs", what, skipped, len(images), min_masks
        )
    if not xs:
        raise ValueError(
            f"{what}: no image has at least {min_masks} ROIs (min_train_masks); "
            "annotate more cells or lower min_train_masks"
        )
    return _Data(xs, labs, flows, np.asarray(diams, dtype=np.float64), skipped)


# ----------------------------------------------------------------------------- network
def _new_net(seed: int):
    from cp2_engine.network import CPnet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CPnet()


def _resolve_net(model_or_net, seed: int) -> tuple[torch.nn.Module, bool]:
    """Return ``(a private copy of the net to train, whether it is pretrained)``."""
    if model_or_net is None or (isinstance(model_or_net, str) and model_or_net == "scratch"):
        return _new_net(seed), False
    if isinstance(model_or_net, torch.nn.Module):
        return copy.deepcopy(model_or_net).cpu(), True
    if isinstance(getattr(model_or_net, "net", None), torch.nn.Module):
        return copy.deepcopy(model_or_net.net).cpu(), True
    if isinstance(model_or_net, str | os.PathLike):
        from cp2_engine.network import build_net_from_state, find_model, load_state_dict

        spec = find_model(model_or_net)
        return build_net_from_state(load_state_dict(spec.paths[0])), True
    raise TypeError(
        "model_or_net must be a CPnet, a Model, a model name or path, 'scratch' or None, "
        f"got {type(model_or_net).__name__}"
    )


def _autocast(device: torch.device, config: TrainConfig):
    if device.type == "cuda" and config.amp:
        return torch.autocast("cuda", dtype=torch.float16)
    if _use_bf16(config, device):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _use_bf16(config: TrainConfig, device: torch.device) -> bool:
    if device.type != "cpu":
        return False
    if config.bf16 is None:
        return cpu_has_native_bf16()
    return bool(config.bf16)


# ----------------------------------------------------------------------------- files
def _atomic_save(obj, path: Path, writer) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(obj, fh)
        give_default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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


def preload() -> None:
    """Import and initialise the lazily loaded parts of torch and matplotlib that training uses.

    The first optimizer step imports a large part of torch (and sympy), the first loss plot
    initialises matplotlib, and the first labels-to-flows call loads numba kernels; each holds the
    GIL for a fraction of a second or more. A GUI calls this once on its
    main thread (e.g. when the training widget is built), so a training worker thread started
    later never stalls the event loop.

    Examples
    --------
    >>> preload()
    """
    from cp2_engine.postprocess import masks_to_flows

    square = np.zeros((8, 8), np.int32)
    square[2:6, 2:6] = 1
    masks_to_flows(square)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9, weight_decay=1e-4)
    (param * 2).sum().backward()
    opt.step()
    with tempfile.TemporaryDirectory() as tmp:
        _plot_losses([1.0, 0.5], [(1, 0.7)], Path(tmp) / "warmup.png")


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- the loop
def _epoch_order(n: int, min_per_epoch: int, rng: np.random.Generator) -> np.ndarray:
    """Image indices of one epoch: a permutation, or permutations concatenated up to the min."""
    total = max(n, min_per_epoch)
    reps = -(-total // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:total]


def _batch(data: _Data, idx, rng, config: TrainConfig, diam_mean: float, device, *, train=True):
    batch = random_rotate_and_resize(
        [data.x[i] for i in idx],
        [data.labels[i] for i in idx],
        [data.flows[i] for i in idx],
        rng=rng,
        bsize=config.bsize,
        scale_range=config.scale_range if train else 0.0,
        diameters=data.diameters[idx] if config.rescale else None,
        diam_mean=diam_mean,
        rotate=train,
        flip=train,
        device=device,
    )
    x = batch.images
    if use_channels_last(config.channels_last, torch.device(device)):
        x = x.contiguous(memory_format=torch.channels_last)
    return x, batch.target()


def _train_step(net, optimizer, scaler, x, target, device, config) -> float:
    with _autocast(device, config):
        y = net(x)[0]
    loss = flow_loss(y, target)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"training diverged (loss {float(loss)}); lower the learning rate or check the data"
        )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def _test_loss(net, data: _Data, config: TrainConfig, diam_mean: float, device) -> float:
    rng = np.random.default_rng([config.seed, 2**31])
    net.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data.x), config.batch_size):
            idx = np.arange(start, min(start + config.batch_size, len(data.x)))
            x, target = _batch(data, idx, rng, config, diam_mean, device, train=False)
            with _autocast(device, config):
                y = net(x)[0]
            total += float(flow_loss(y, target)) * len(idx)
            count += len(idx)
    net.train()
    return total / count


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


def _setup(model_or_net, images, labels, config, test_images, test_labels):
    net, pretrained = _resolve_net(model_or_net, config.seed)
    config = config.resolved(pretrained=pretrained)
    device = resolve_device(config.device)
    data = _prepare(images, labels, config, min_masks=config.min_train_masks, what="training")
    test = None
    if test_images is not None:
        test = _prepare(test_images, test_labels, config, min_masks=1, what="test")
    diam_labels = float(np.mean(data.diameters))
    net.diam_labels.data.fill_(diam_labels)
    net = net.to(device)
    if use_channels_last(config.channels_last, device):
        net = net.to(memory_format=torch.channels_last)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=config.learning_rate, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )  # fmt: skip
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.amp)
    return net, config, device, data, test, optimizer, scaler


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


def iter_train(
    model_or_net,
    images: Sequence,
    labels: Sequence,
    *,
    config: TrainConfig | None = None,
    save_path: str | os.PathLike | None = None,
    resume_from: str | os.PathLike | None = None,
    test_images: Sequence | None = None,
    test_labels: Sequence | None = None,
) -> Generator[TrainEvent, None, TrainResult]:
    """Train a network, yielding progress events; the generator returns a :class:`TrainResult`.

    Parameters
    ----------
    model_or_net : CPnet, Model, str, path or None
        Starting point: a network or a ``Model`` (copied, never modified), a
        model name or file, or ``None`` / ``"scratch"`` for random weights (seeded).
    images, labels : sequence of ndarray
        Training images (any layout :func:`cp2_engine.inference.convert_image` accepts) and
        ``(H, W)`` integer labels.
    config : TrainConfig, optional
        Settings (default ``TrainConfig()``).
    save_path : str or path, optional
        Model file to write (Cellpose-loadable weights via :func:`cp2_engine.network.save_model`,
        plus ``<save_path>.ckpt``, ``<save_path>_log.jsonl`` and ``<save_path>_loss.png``).
        None keeps everything in memory (``resume_from`` then defaults it to the checkpoint's
        model path).
    resume_from : str or path, optional
        A ``.ckpt`` file to continue from (same data and config).
    test_images, test_labels : sequence of ndarray, optional
        Held-out data for the test loss.

    Yields
    ------
    TrainEvent
        :class:`TrainStarted`, then :class:`StepEvent` / :class:`EpochEvent` /
        :class:`CheckpointSaved`.

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> from cp2_engine.synthetic import touching_cells
    >>> s = touching_cells((64, 64), n_cells=8, diameter=16, seed=0)
    >>> cfg = TrainConfig(n_epochs=1, bsize=32, batch_size=2, min_images_per_epoch=2,
    ...                   device="cpu", warmup_epochs=0)
    >>> gen = iter_train(None, [s.image], [s.labels], config=cfg)
    >>> type(next(gen)).__name__
    'TrainStarted'
    >>> gen.close()
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    net, config, device, data, test, optimizer, scaler = _setup(
        model_or_net, images, labels, config, test_images, test_labels
    )
    if save_path is None and resume_from is not None:
        save_path = str(resume_from).removesuffix(".ckpt")
    model_path = Path(save_path) if save_path is not None else None
    if model_path is not None and not model_path.parent.is_dir():
        raise FileNotFoundError(f"folder for the model does not exist: {model_path.parent}")
    run = _Run()
    if resume_from is not None:
        run = _resume(resume_from, net, optimizer, scaler, data, config)
    diam_labels = float(net.diam_labels.item())
    diam_mean = float(net.diam_mean.item())
    log_path = Path(str(model_path) + "_log.jsonl") if model_path is not None else None
    if log_path is not None and resume_from is None and log_path.exists():
        log_path.unlink()
    rates = learning_rate_schedule(config)
    n_per_epoch = max(len(data.x), config.min_images_per_epoch)
    steps = -(-n_per_epoch // config.batch_size)
    start_epoch = run.epoch + 1
    logger.info("training on %d images (%d skipped), epochs %d..%d, lr %.3g, device %s",
                len(data.x), data.n_skipped, start_epoch, config.n_epochs - 1,
                config.learning_rate, device)  # fmt: skip
    yield TrainStarted(len(data.x), data.n_skipped, config.n_epochs, start_epoch, steps,
                       config.learning_rate, str(device), diam_labels)  # fmt: skip
    t0 = time.perf_counter()
    net.train()
    try:
        for epoch in range(start_epoch, config.n_epochs):
            rng = np.random.default_rng([config.seed, epoch])
            lr = float(rates[epoch])
            for group in optimizer.param_groups:
                group["lr"] = lr
            order = _epoch_order(len(data.x), config.min_images_per_epoch, rng)
            step_losses = []
            for step in range(steps):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                x, target = _batch(data, idx, rng, config, diam_mean, device)
                loss = _train_step(net, optimizer, scaler, x, target, device, config)
                step_losses.append((loss, len(idx)))
                yield StepEvent(epoch, step, loss, lr, time.perf_counter() - t0)
            epoch_loss = sum(lo * n for lo, n in step_losses) / sum(n for _, n in step_losses)
            run.epoch = epoch
            run.losses.append(epoch_loss)
            last = epoch == config.n_epochs - 1
            test_loss = None
            if test is not None and (epoch % config.test_every == 0 or last):
                test_loss = _test_loss(net, test, config, diam_mean, device)
                run.test_losses.append((epoch, test_loss))
            elapsed = time.perf_counter() - t0
            eta = elapsed / (epoch + 1 - start_epoch) * (config.n_epochs - 1 - epoch)
            if log_path is not None:
                _append_log(log_path, {"epoch": epoch, "loss": epoch_loss, "lr": lr,
                                       "test_loss": test_loss, "elapsed": elapsed})  # fmt: skip
            yield EpochEvent(epoch, epoch_loss, lr, elapsed, eta, test_loss)
            if model_path is not None and ((epoch + 1) % config.save_every == 0 or last):
                yield _save(net, optimizer, scaler, run, data, config, model_path, diam_labels)
    except GeneratorExit:
        logger.info("training cancelled after epoch %d; saved files are unchanged", run.epoch)
        raise
    net.eval()
    return TrainResult(
        net=net, model_path=model_path, losses=tuple(run.losses),
        test_losses=tuple(run.test_losses), diam_labels=diam_labels, n_images=len(data.x),
        n_skipped=data.n_skipped, config=config,
    )  # fmt: skip


def train(model_or_net, images: Sequence, labels: Sequence, **kwargs) -> TrainResult:
    """Run :func:`iter_train` to the end and return its :class:`TrainResult`.

    Parameters
    ----------
    model_or_net, images, labels
        As for :func:`iter_train`.
    **kwargs
        The keyword arguments of :func:`iter_train` (``config``, ``save_path``, ...).

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> from cp2_engine.synthetic import touching_cells
    >>> s = touching_cells((64, 64), n_cells=8, diameter=16, seed=0)
    >>> cfg = TrainConfig(n_epochs=1, bsize=32, batch_size=2, min_images_per_epoch=2,
    ...                   device="cpu", warmup_epochs=0)
    >>> len(train(None, [s.image], [s.labels], config=cfg).losses)
    1
    """
    gen = iter_train(model_or_net, images, labels, **kwargs)
    return drain(gen)


def train_size_model(
    net,
    images: Sequence,
    labels: Sequence,
    *,
    model_path: str | os.PathLike | None = None,
    n_epochs: int = 10,
    bsize: int = 224,
    batch_size: int = 8,
    channels=(0, 0),
    seed: int = 0,
    l2: float = 1.0,
):
    """Fit a size model: ridge regression of log object diameter on the net's style vectors.

    Each epoch takes one random crop per image, scaled by ``U(0.5, 1.5)`` without diameter
    normalisation; the target is the image's median diameter times that scale.

    Parameters
    ----------
    net : CPnet
        The trained segmentation network (left in eval mode).
    images, labels : sequence of ndarray
        Training data (images without ROIs are ignored).
    model_path : str or path, optional
        When given, the size model is saved beside it as ``<model_path>_size.npy``.
    n_epochs, bsize, batch_size : int
        Passes over the data, crop size and crops per forward pass.
    channels : (int, int)
        Cellpose channels used to build the network input.
    seed : int
        Seed of the local RNG.
    l2 : float
        Ridge penalty.

    Returns
    -------
    SizeModel

    Examples
    --------
    >>> from cp2_engine.network._net import CPnet
    >>> from cp2_engine.synthetic import touching_cells
    >>> cells = [touching_cells((64, 64), n_cells=6, diameter=d, seed=d) for d in (12, 20)]
    >>> sm = train_size_model(CPnet(nbase=(2, 8, 16)), [c.image for c in cells],
    ...                       [c.labels for c in cells], n_epochs=2, bsize=32)
    >>> sm.diam_mean
    30.0
    """
    from cp2_engine.inference import fit_size_model

    cfg = TrainConfig(channels=channels, rescale=False, scale_range=1.0, bsize=bsize,
                      batch_size=batch_size, min_train_masks=1, seed=seed)  # fmt: skip
    data = _prepare(images, labels, cfg, min_masks=1, what="size model")
    device = next(net.parameters()).device
    net.eval()
    styles, diams = [], []
    with torch.no_grad():
        for epoch in range(n_epochs):
            rng = np.random.default_rng([seed, 7, epoch])
            for start in range(0, len(data.x), batch_size):
                idx = np.arange(start, min(start + batch_size, len(data.x)))
                b = random_rotate_and_resize(
                    [data.x[i] for i in idx], rng=rng, bsize=bsize, scale_range=1.0,
                    device=device,
                )  # fmt: skip
                styles.append(net(b.images)[1].float().cpu().numpy())
                diams.append(data.diameters[idx] * b.scale)
    size_model = fit_size_model(
        np.concatenate(styles), np.concatenate(diams), diam_mean=float(net.diam_mean.item()), l2=l2
    )
    if model_path is not None:
        size_model.save(Path(str(model_path) + "_size.npy"))
    return size_model
