"""Train or fine-tune a CPnet by epochs: a generator of progress events, checkpoints and resume.

Epoch runs are one use of the step driver (:mod:`cp2_engine.training._driver`): the batches of
an epoch, its learning rate, and the end-of-epoch work (test loss, log line, save) are the
driver's options here.

:func:`iter_train` does the work and *yields* typed events (:class:`TrainStarted`,
:class:`StepEvent`, :class:`EpochEvent`, :class:`CheckpointSaved`); its ``return`` value (the
``StopIteration.value``) is a :class:`TrainResult`. :func:`train` drains it. Closing the generator
(``gen.close()``, e.g. a GUI's cancel button) stops at the next yield; files are only ever
replaced atomically (``_checkpoint.py``), so the last saved model stays intact and loadable.

Recipe (Cellpose 2.0 paper defaults, see :class:`TrainConfig`): images are converted to the
2-channel network input and normalised once; labels are turned into unit flows once; images with
fewer than ``min_train_masks`` ROIs are skipped. Every epoch draws ``max(n_images,
min_images_per_epoch)`` images, augments them (``_augment.py``) into ``bsize`` crops
and takes SGD steps on ``flow_loss`` (``_losses.py``).

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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cp2_engine.network import resolve_device
from cp2_engine.training._checkpoint import _append_log, _plot_losses, _resume, _Run, _save
from cp2_engine.training._config import TrainConfig, learning_rate_schedule
from cp2_engine.training._driver import StepPlan, TrainState, run_steps, trim_log
from cp2_engine.training._events import (
    CheckpointSaved,
    EpochEvent,
    TrainEvent,
    TrainResult,
    TrainStarted,
)
from cp2_engine.training._prepare import _Data, _prepare
from cp2_engine.training._step import _batch, _epoch_order, _resolve_net, _test_loss
from cp2_engine.util import drain, format_duration

logger = logging.getLogger(__name__)


@dataclass
class _Loop:
    """What one run works with, set up once (the diameters are read after a resume)."""

    state: TrainState
    config: TrainConfig
    data: _Data
    test: _Data | None
    rates: np.ndarray
    run: _Run = field(default_factory=_Run)
    model_path: Path | None = None
    log_path: Path | None = None
    diam_labels: float = 0.0
    diam_mean: float = 0.0
    start_epoch: int = 0
    t0: float = 0.0

    @property
    def steps(self) -> int:
        """SGD steps per epoch."""
        n_per_epoch = max(len(self.data.x), self.config.min_images_per_epoch)
        return -(-n_per_epoch // self.config.batch_size)

    @property
    def total_steps(self) -> int:
        """SGD steps of the whole run."""
        return self.config.n_epochs * self.steps

    def batch_sizes(self) -> list[int]:
        """Images in each step of an epoch (the last step may hold fewer)."""
        n_per_epoch = max(len(self.data.x), self.config.min_images_per_epoch)
        size = self.config.batch_size
        return [min(size, n_per_epoch - k * size) for k in range(self.steps)]


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
    state = TrainState.create(
        net, device=device, precision=config.precision, learning_rate=config.learning_rate,
        momentum=config.momentum, weight_decay=config.weight_decay,
        channels_last=config.channels_last,
    )  # fmt: skip
    return _Loop(state, config, data, test, learning_rate_schedule(config))


def _model_path(save_path, resume_from) -> Path | None:
    """The model file to write: ``save_path``, else the resumed checkpoint's model, else None."""
    if save_path is None and resume_from is not None:
        save_path = str(resume_from).removesuffix(".ckpt")
    model_path = Path(save_path) if save_path is not None else None
    if model_path is not None and not model_path.parent.is_dir():
        raise FileNotFoundError(f"folder for the model does not exist: {model_path.parent}")
    return model_path


def _start(loop: _Loop, *, resumed: bool) -> TrainStarted:
    """Read the net's diameters, start a fresh log (unless resumed); the start event."""
    net, start_epoch = loop.state.net, loop.start_epoch
    loop.diam_labels = float(net.diam_labels.item())
    loop.diam_mean = float(net.diam_mean.item())
    if loop.model_path is not None:
        loop.log_path = Path(str(loop.model_path) + "_log.jsonl")
        if not resumed and loop.log_path.exists():
            loop.log_path.unlink()
        else:
            trim_log(loop.log_path, "epoch", start_epoch)
    config, data = loop.config, loop.data
    logger.info("training on %d images (%d skipped), epochs %d..%d, lr %.3g, device %s, %s",
                len(data.x), data.n_skipped, start_epoch, config.n_epochs - 1,
                config.learning_rate, loop.state.device, loop.state.precision)  # fmt: skip
    text = f"training on {len(data.x)} images; {data.n_skipped} skipped (too few ROIs)"
    if start_epoch > 0:
        text += f"; resuming at epoch {start_epoch} of {config.n_epochs}"
    return TrainStarted(len(data.x), data.n_skipped, config.n_epochs, start_epoch, loop.steps,
                        config.learning_rate, str(loop.state.device), loop.diam_labels,
                        done=start_epoch * loop.steps, total=loop.total_steps,
                        message=text)  # fmt: skip


def _epoch_batches(loop: _Loop):
    """The batches of every step from ``loop.start_epoch`` on; epoch ``e`` draws its image
    order and augmentation from ``numpy.random.default_rng([seed, e])``."""
    config, size = loop.config, loop.config.batch_size
    for epoch in range(loop.start_epoch, config.n_epochs):
        rng = np.random.default_rng([config.seed, epoch])
        order = _epoch_order(len(loop.data.x), config.min_images_per_epoch, rng)
        for step in range(loop.steps):
            idx = order[step * size : (step + 1) * size]
            yield _batch(loop.data, idx, rng, config, loop.diam_mean, loop.state.device)


def _save_now(loop: _Loop) -> CheckpointSaved:
    _save(loop.state, loop.run, loop.data, loop.config, loop.model_path, loop.diam_labels)
    done, epoch = loop.state.step, loop.run.epoch
    text = f"checkpoint saved after epoch {epoch} (step {done})"
    return CheckpointSaved(loop.model_path, epoch, done=done, total=loop.total_steps, message=text)


def _epoch_end(loop: _Loop) -> Generator[TrainEvent, None, None]:
    """After a step that ends an epoch: its mean loss, test loss, log line, event and save."""
    state, config, run = loop.state, loop.config, loop.run
    if state.step % loop.steps:
        return
    epoch = state.step // loop.steps - 1
    step_losses = zip(state.losses[-loop.steps :], loop.batch_sizes(), strict=True)
    pairs = list(step_losses)
    epoch_loss = sum(lo * n for lo, n in pairs) / sum(n for _, n in pairs)
    lr = float(loop.rates[epoch])
    run.epoch = epoch
    run.losses.append(epoch_loss)
    last = epoch == config.n_epochs - 1
    test_loss = None
    if loop.test is not None and (epoch % config.test_every == 0 or last):
        test_loss = _test_loss(state.net, loop.test, config, loop.diam_mean, state.device,
                               state.precision)  # fmt: skip
        run.test_losses.append((epoch, test_loss))
    elapsed = time.perf_counter() - loop.t0
    eta = elapsed / (epoch + 1 - loop.start_epoch) * (config.n_epochs - 1 - epoch)
    if loop.log_path is not None:
        _append_log(loop.log_path, {"epoch": epoch, "loss": epoch_loss, "lr": lr,
                                    "test_loss": test_loss, "elapsed": elapsed})  # fmt: skip
    text = f"epoch {epoch + 1}/{config.n_epochs} · loss {epoch_loss:.4f}"
    if test_loss is not None:
        text += f" · test {test_loss:.4f}"
    yield EpochEvent(epoch, epoch_loss, lr, elapsed, eta, test_loss, done=state.step,
                     total=loop.total_steps,
                     message=f"{text} · ETA {format_duration(eta)}")  # fmt: skip
    if loop.model_path is not None and ((epoch + 1) % config.save_every == 0 or last):
        yield _save_now(loop)


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
    if resume_from is not None:
        loop.run = _resume(resume_from, loop.state, loop.data, loop.config, loop.steps)
    loop.start_epoch = loop.run.epoch + 1
    yield _start(loop, resumed=resume_from is not None)
    loop.t0 = time.perf_counter()
    loop.state.net.train()
    rates, per_epoch = loop.rates, loop.steps
    plan = StepPlan(steps=loop.config.n_epochs * per_epoch, steps_per_epoch=per_epoch,
                 learning_rate=lambda step, _total: float(rates[step // per_epoch]))  # fmt: skip
    yield from run_steps(loop.state, _epoch_batches(loop), plan, save=partial(_save_now, loop),
                          after_step=partial(_epoch_end, loop))  # fmt: skip
    net = loop.state.net.eval()
    return TrainResult(
        net=net, model_path=loop.model_path, losses=tuple(loop.run.losses),
        test_losses=tuple(loop.run.test_losses), diam_labels=loop.diam_labels,
        n_images=len(loop.data.x), n_skipped=loop.data.n_skipped, config=loop.config,
    )  # fmt: skip


def train(model_or_net, images: Sequence, labels: Sequence, **options) -> TrainResult:
    """Run :func:`iter_train` to the end and return its :class:`TrainResult`.

    Parameters
    ----------
    model_or_net, images, labels
        As for :func:`iter_train`.
    **options
        config, save_path, resume_from, test_images, test_labels: as for :func:`iter_train`.

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from cp2_engine.synthetic import touching_cells
    >>> s = touching_cells((64, 64), n_cells=8, diameter=16, seed=0)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "tiny"
    >>> cfg = TrainConfig(n_epochs=1, bsize=32, batch_size=2, min_images_per_epoch=2,
    ...                   device="cpu", warmup_epochs=0)
    >>> result = train(None, [s.image], [s.labels], config=cfg, save_path=out)
    >>> len(result.losses), result.model_path == out, out.is_file()
    (1, True, True)
    """
    return drain(iter_train(model_or_net, images, labels, **options))


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
