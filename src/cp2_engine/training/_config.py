"""Training settings: :class:`TrainConfig` (frozen) and the per-epoch learning-rate schedule."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cp2_engine.network import PRECISIONS

logger = logging.getLogger(__name__)

_MODES = ("online", "offline")


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
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast precision of the forward pass, decided by cp2's one policy
        (:func:`cp2_engine.network.resolve_precision`): "auto" = bfloat16 where the hardware
        computes it natively (AVX-512 BF16 / AMX CPUs, bf16-capable CUDA GPUs), float16 on
        older CUDA GPUs, float32 elsewhere. "fp16" (CUDA only) scales the loss with a
        gradient scaler; "bf16" does not need one. A whole HITL round in bf16 on the CPU (100
        epochs, ``benchmarks/bench_bf16_round.py``) ended at the same loss as fp32 (0.1629 vs
        0.1627 over the last 10 epochs) and the same test AP, 2.6x faster on 2 cores.
    channels_last : bool or None
        Use the channels-last memory format for the net and its input. None (default): on a
        CPU with AVX-512 only, where a step was about 8 % faster with it; on an AVX2 CPU the
        default layout is faster (:func:`cp2_engine.network.use_channels_last`).
    anisotropy : float or None
        For z-stacks in the training set ((Z, Y, X) labels): z step divided by the xy pixel
        size. Stacks are trained on as 2-D planes in three orientations (YX, ZY, ZX), with Z of
        the ZY and ZX planes resized by this (see :func:`stack_to_planes`). None means 1.

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
    precision: str = "auto"
    channels_last: bool | None = None
    anisotropy: float | None = None

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
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string such as 'auto', got {self.device!r}")
        if self.anisotropy is not None and not (
            isinstance(self.anisotropy, int | float) and 0 < self.anisotropy < math.inf
        ):
            raise ValueError(
                f"anisotropy must be None or a positive number, got {self.anisotropy!r}"
            )

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> TrainConfig:
        """A config from a mapping of fields (a recipe's ``[train]`` table, a stored project).

        Mappings written before the ``precision`` field may say ``bf16`` (true/false/None)
        and ``amp``: they are read as ``precision`` ("bf16" / "fp32" / "auto"), with a
        deprecation line in the log.

        Examples
        --------
        >>> TrainConfig.from_dict({"n_epochs": 5, "bf16": False}).precision
        'fp32'
        """
        settings = dict(settings)
        legacy = {k: settings.pop(k) for k in ("bf16", "amp") if k in settings}
        if legacy:
            bf16 = legacy.get("bf16")
            precision = "auto" if bf16 is None else ("bf16" if bf16 else "fp32")
            settings.setdefault("precision", precision)
            logger.warning("training settings %s are deprecated: read as precision=%r",
                           legacy, settings["precision"])  # fmt: skip
        return cls(**settings)

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
