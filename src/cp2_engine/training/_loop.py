"""Train or fine-tune a CPnet: a generator of progress events, checkpoints and resume.

:func:`iter_train` does the work and *yields* typed events (:class:`TrainStarted`,
:class:`StepEvent`, :class:`EpochEvent`, :class:`CheckpointSaved`); its ``return`` value (the
``StopIteration.value``) is a :class:`TrainResult`. :func:`train` drains it. Closing the generator
(``gen.close()``, e.g. a GUI's cancel button) stops at the next yield; files are only ever
replaced atomically (``_checkpoint.py``), so the last saved model stays intact and loadable.

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

import logging
import os
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cp2_engine.network import resolve_device, use_channels_last
from cp2_engine.training._checkpoint import _append_log, _plot_losses, _resume, _Run, _save
from cp2_engine.training._config import TrainConfig, learning_rate_schedule
from cp2_engine.training._events import (
    EpochEvent,
    StepEvent,
    TrainEvent,
    TrainResult,
    TrainStarted,
)
from cp2_engine.training._prepare import _Data, _prepare
from cp2_engine.training._step import (
    _batch,
    _epoch_order,
    _resolve_net,
    _test_loss,
    _train_step,
)
from cp2_engine.util import atomic_write_file, drain

logger = logging.getLogger(__name__)


@dataclass
class _Loop:
    """What one run works with, set up once (the diameters are read after a resume)."""

    net: Any
    config: TrainConfig
    device: torch.device
    data: _Data
    test: _Data | None
    optimizer: Any
    scaler: Any
    rates: np.ndarray
    model_path: Path | None = None
    log_path: Path | None = None
    diam_labels: float = 0.0
    diam_mean: float = 0.0
    t0: float = 0.0

    @property
    def steps(self) -> int:
        """SGD steps per epoch."""
        n_per_epoch = max(len(self.data.x), self.config.min_images_per_epoch)
        return -(-n_per_epoch // self.config.batch_size)


def _setup(model_or_net, images, labels, config, test_images, test_labels) -> _Loop:
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
    rates = learning_rate_schedule(config)
    return _Loop(net, config, device, data, test, optimizer, scaler, rates)


def _model_path(save_path, resume_from) -> Path | None:
    """The model file to write: ``save_path``, else the resumed checkpoint's model, else None."""
    if save_path is None and resume_from is not None:
        save_path = str(resume_from).removesuffix(".ckpt")
    model_path = Path(save_path) if save_path is not None else None
    if model_path is not None and not model_path.parent.is_dir():
        raise FileNotFoundError(f"folder for the model does not exist: {model_path.parent}")
    return model_path


def _start(loop: _Loop, start_epoch: int, *, resumed: bool) -> TrainStarted:
    """Read the net's diameters, start a fresh log (unless resumed); the start event."""
    loop.diam_labels = float(loop.net.diam_labels.item())
    loop.diam_mean = float(loop.net.diam_mean.item())
    if loop.model_path is not None:
        loop.log_path = Path(str(loop.model_path) + "_log.jsonl")
        if not resumed and loop.log_path.exists():
            loop.log_path.unlink()
        elif loop.log_path.exists():
            _truncate_log(loop.log_path, start_epoch)
    config, data = loop.config, loop.data
    logger.info("training on %d images (%d skipped), epochs %d..%d, lr %.3g, device %s",
                len(data.x), data.n_skipped, start_epoch, config.n_epochs - 1,
                config.learning_rate, loop.device)  # fmt: skip
    return TrainStarted(len(data.x), data.n_skipped, config.n_epochs, start_epoch, loop.steps,
                        config.learning_rate, str(loop.device), loop.diam_labels)  # fmt: skip


def _truncate_log(path: Path, start_epoch: int) -> None:
    """Drop the log lines of epochs after the checkpoint (logged before a crash, run again)."""
    import json

    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = [ln for ln in lines if ln.endswith("\n") and json.loads(ln)["epoch"] < start_epoch]
    if len(keep) != len(lines):
        atomic_write_file(path, lambda fh: fh.write("".join(keep).encode("utf-8")))


def _steps(loop: _Loop, epoch: int, lr: float, rng) -> Generator[StepEvent, None, float]:
    """Take one epoch's SGD steps, yielding a :class:`StepEvent` each; return the mean loss."""
    config = loop.config
    order = _epoch_order(len(loop.data.x), config.min_images_per_epoch, rng)
    step_losses = []
    for step in range(loop.steps):
        idx = order[step * config.batch_size : (step + 1) * config.batch_size]
        x, target = _batch(loop.data, idx, rng, config, loop.diam_mean, loop.device)
        loss = _train_step(loop.net, loop.optimizer, loop.scaler, x, target, loop.device, config)
        step_losses.append((loss, len(idx)))
        yield StepEvent(epoch, step, loss, lr, time.perf_counter() - loop.t0)
    return sum(lo * n for lo, n in step_losses) / sum(n for _, n in step_losses)


def _epoch(loop: _Loop, run: _Run, epoch: int, start: int) -> Generator[TrainEvent, None, None]:
    """One epoch: its steps, the test loss when due, the log line, the save when due."""
    config = loop.config
    rng = np.random.default_rng([config.seed, epoch])
    lr = float(loop.rates[epoch])
    for group in loop.optimizer.param_groups:
        group["lr"] = lr
    epoch_loss = yield from _steps(loop, epoch, lr, rng)
    run.epoch = epoch
    run.losses.append(epoch_loss)
    last = epoch == config.n_epochs - 1
    test_loss = None
    if loop.test is not None and (epoch % config.test_every == 0 or last):
        test_loss = _test_loss(loop.net, loop.test, config, loop.diam_mean, loop.device)
        run.test_losses.append((epoch, test_loss))
    elapsed = time.perf_counter() - loop.t0
    eta = elapsed / (epoch + 1 - start) * (config.n_epochs - 1 - epoch)
    if loop.log_path is not None:
        _append_log(loop.log_path, {"epoch": epoch, "loss": epoch_loss, "lr": lr,
                                    "test_loss": test_loss, "elapsed": elapsed})  # fmt: skip
    yield EpochEvent(epoch, epoch_loss, lr, elapsed, eta, test_loss)
    if loop.model_path is not None and ((epoch + 1) % config.save_every == 0 or last):
        yield _save(loop.net, loop.optimizer, loop.scaler, run, loop.data, config,
                    loop.model_path, loop.diam_labels)  # fmt: skip


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
    loop = _setup(model_or_net, images, labels, config, test_images, test_labels)
    loop.model_path = _model_path(save_path, resume_from)
    run = _Run()
    if resume_from is not None:
        run = _resume(resume_from, loop.net, loop.optimizer, loop.scaler, loop.data, loop.config)
    start_epoch = run.epoch + 1
    yield _start(loop, start_epoch, resumed=resume_from is not None)
    loop.t0 = time.perf_counter()
    loop.net.train()
    try:
        for epoch in range(start_epoch, loop.config.n_epochs):
            yield from _epoch(loop, run, epoch, start_epoch)
    except GeneratorExit:
        logger.info("training cancelled after epoch %d; saved files are unchanged", run.epoch)
        raise
    loop.net.eval()
    return TrainResult(
        net=loop.net, model_path=loop.model_path, losses=tuple(run.losses),
        test_losses=tuple(run.test_losses), diam_labels=loop.diam_labels,
        n_images=len(loop.data.x), n_skipped=loop.data.n_skipped, config=loop.config,
    )  # fmt: skip


def train(
    model_or_net,
    images: Sequence,
    labels: Sequence,
    *,
    config: TrainConfig | None = None,
    save_path: str | os.PathLike | None = None,
    resume_from: str | os.PathLike | None = None,
    test_images: Sequence | None = None,
    test_labels: Sequence | None = None,
) -> TrainResult:
    """Run :func:`iter_train` to the end and return its :class:`TrainResult`.

    Parameters
    ----------
    model_or_net, images, labels, config, save_path, resume_from, test_images, test_labels
        As for :func:`iter_train`.

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
    gen = iter_train(
        model_or_net, images, labels, config=config, save_path=save_path,
        resume_from=resume_from, test_images=test_images, test_labels=test_labels,
    )  # fmt: skip
    return drain(gen)


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
