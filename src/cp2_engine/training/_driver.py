"""The one training driver: SGD steps on a CPnet, one checkpoint format, one precision policy.

Every door trains through :func:`_run_steps`: a HITL round, folder training and a zoo specialist
(epochs: :mod:`cp2_engine.training._loop`) and a bundled-model recipe cycle (steps, EMA, time
budget: :mod:`cp2_engine.recipes`). What differs between them is an option of the driver:

- the batches (an iterator of ``(x, target)``: per-epoch permutations, or per-step seeded
  draws over weighted sources);
- the learning rate of each step (``learning_rate(step, total_steps)``) and, optionally, an
  exponential moving average of the weights (``ema_decay(step)``);
- when to save (after a step, by the door's ``after_step`` hook, e.g. at the end of an epoch;
  every ``checkpoint_seconds``; when the generator is closed) and a time budget that fixes the
  step count after ``probe_steps`` timed steps.

Precision: :func:`cp2_engine.network.resolve_precision` decides ("fp32", "bf16" or "fp16") and
:func:`cp2_engine.network.autocast_for` runs the forward pass; only "fp16" (CUDA) scales the loss
with a :class:`torch.amp.GradScaler`.

One checkpoint format (``CKPT_FORMAT``, version ``CKPT_VERSION``): the net, optimizer, gradient
scaler and EMA weights, the steps done, the per-step losses, the training seconds, the step
count fixed by a time budget, the precision, and the door's own records (epoch losses, test
losses, image count, hardware, starting weights). Checkpoints of the older recipe format
(``cp2-recipe-checkpoint``) are read and converted; version-1 epoch checkpoints
(``cp2-train-checkpoint`` version 1) are refused with a message naming the file and what to do.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cp2_engine.network import autocast_for, resolve_precision, use_channels_last
from cp2_engine.training._events import CheckpointSaved, StepEvent, TrainEvent
from cp2_engine.training._losses import flow_loss
from cp2_engine.util import atomic_write_file, tune_allocator

logger = logging.getLogger(__name__)

CKPT_FORMAT = "cp2-train-checkpoint"
CKPT_VERSION = 2
_OLD_RECIPE_FORMAT = "cp2-recipe-checkpoint"
#: Door-specific records a checkpoint may carry (None when a door does not use them).
_RECORDS = ("epoch", "epoch_losses", "test_losses", "n_images", "diam_labels", "config",
            "hardware", "init")  # fmt: skip


@dataclass
class TrainState:
    """Everything a run changes: the net, optimizer, scaler, EMA weights and the progress.

    Make one with :meth:`create`; :func:`run_steps` advances it, :meth:`save_checkpoint` and
    :meth:`restore` write and read it (:func:`load_checkpoint`).

    Attributes
    ----------
    net, optimizer, scaler
        The network (on ``device``), its SGD optimizer and the gradient scaler (enabled for
        "fp16" on CUDA only).
    device : torch.device
    precision : str
        The resolved precision: "fp32", "bf16" or "fp16".
    ema : dict or None
        Exponential moving average of the weights (float32), when the run keeps one.
    step : int
        Steps done.
    losses : list of float
        Loss of every step done.
    seconds : float
        Training seconds over every session of the run.
    total_steps : int or None
        The step count fixed by a time budget (None: the plan's count).
    saved_step : int
        Steps done at the last checkpoint.
    """

    net: Any
    optimizer: Any
    scaler: Any
    device: torch.device
    precision: str
    ema: dict | None = None
    step: int = 0
    losses: list = field(default_factory=list)
    seconds: float = 0.0
    total_steps: int | None = None
    saved_step: int = 0

    @classmethod
    def create(cls, net, *, device: torch.device | str = "cpu", precision: str = "auto",
               learning_rate: float, momentum: float = 0.9, weight_decay: float = 1e-4,
               ema: bool = False, channels_last: bool | None = False) -> TrainState:  # fmt: skip
        """Move ``net`` to ``device``; set up SGD, the gradient scaler and (optionally) an EMA.

        ``precision`` goes through :func:`cp2_engine.network.resolve_precision`;
        ``channels_last`` through :func:`cp2_engine.network.use_channels_last`.

        Examples
        --------
        >>> state = TrainState.create(new_net(0), precision="fp32", learning_rate=0.1)
        >>> state.step, state.precision, state.scaler.is_enabled()
        (0, 'fp32', False)
        """
        device = torch.device(device)
        precision = resolve_precision(precision, device)
        net = net.to(device)
        if use_channels_last(channels_last, device, training=True):
            net = net.to(memory_format=torch.channels_last)
        params = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=learning_rate, momentum=momentum,
                                    weight_decay=weight_decay)  # fmt: skip
        fp16 = precision == "fp16" and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        return cls(net, optimizer, scaler, device, precision, _ema_copy(net) if ema else None)

    def reset_ema(self) -> None:
        """Start the EMA over from the current weights (after loading other weights).

        Examples
        --------
        >>> state = TrainState.create(new_net(0), learning_rate=0.1, ema=True)
        >>> state.reset_ema()
        """
        if self.ema is not None:
            self.ema = _ema_copy(self.net)

    def save_checkpoint(self, path: str | os.PathLike, **records) -> None:
        """Write this state (and the door's ``records``) atomically to ``path``.

        ``records`` are the run's own fields of the one format: ``epoch``, ``epoch_losses``,
        ``test_losses``, ``n_images``, ``diam_labels``, ``config``, ``hardware``, ``init``.

        Examples
        --------
        >>> import tempfile
        >>> state = TrainState.create(new_net(0), learning_rate=0.1)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     state.save_checkpoint(Path(tmp) / "train.ckpt", hardware="cpu")
        ...     load_checkpoint(Path(tmp) / "train.ckpt")["hardware"]
        'cpu'
        """
        unknown = sorted(set(records) - set(_RECORDS))
        if unknown:
            raise ValueError(f"unknown checkpoint records {unknown}; expected {_RECORDS}")
        ckpt = {"format": CKPT_FORMAT, "version": CKPT_VERSION,
                "net": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "ema": self.ema, "step": self.step, "losses": list(self.losses),
                "seconds": self.seconds, "total_steps": self.total_steps,
                "precision": self.precision}  # fmt: skip
        ckpt.update({key: records.get(key) for key in _RECORDS})
        atomic_write_file(Path(path), lambda fh: torch.save(ckpt, fh))
        self.saved_step = self.step

    def restore(self, ckpt: dict, path: str | os.PathLike) -> None:
        """Load a checkpoint (from :func:`load_checkpoint` of ``path``) into this state.

        Examples
        --------
        >>> import tempfile
        >>> state = TrainState.create(new_net(0), learning_rate=0.1)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     state.save_checkpoint(Path(tmp) / "c")
        ...     state.restore(load_checkpoint(Path(tmp) / "c"), Path(tmp) / "c")
        >>> state.step
        0
        """
        try:
            self.net.load_state_dict(ckpt["net"], strict=True)
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"checkpoint {path} does not match this network: {err}") from err
        if self.scaler.is_enabled() and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("ema") is not None:
            self.ema = {k: v.to(self.device) for k, v in ckpt["ema"].items()}
        for per_param in self.optimizer.state.values():
            for key, value in per_param.items():
                if torch.is_tensor(value):
                    per_param[key] = value.to(self.device)
        self.step = self.saved_step = int(ckpt["step"])
        self.losses = list(ckpt["losses"])
        self.seconds = float(ckpt["seconds"])
        self.total_steps = ckpt["total_steps"]
        if ckpt.get("precision") not in (None, self.precision):
            logger.warning("resuming a %s run in %s: it will differ from an uninterrupted run",
                           ckpt["precision"], self.precision)  # fmt: skip


@dataclass(frozen=True)
class StepPlan:
    """How :func:`run_steps` runs: the steps, their schedule, the checkpoint and time policy.

    Attributes
    ----------
    steps : int
        Steps of the whole run (a time budget may fix another count).
    learning_rate : callable
        ``learning_rate(step, total_steps) -> float``.
    ema_decay : callable, optional
        ``ema_decay(step) -> float``; the state must keep an EMA.
    checkpoint_seconds : float, optional
        Save every this many seconds (not after the last step: the door saves the end).
    time_budget : float, optional
        Seconds for the run: after ``probe_steps`` timed steps the step count is fixed
        (``TrainState.total_steps``, kept by a resume).
    probe_steps : int
    save_on_close : bool
        Save when the generator is closed and steps were taken since the last save.
    steps_per_epoch : int, optional
        Epoch runs: fills :attr:`StepEvent.epoch`.

    Examples
    --------
    >>> StepPlan(steps=10, learning_rate=lambda step, total: 0.1).steps
    10
    """

    steps: int
    learning_rate: Callable[[int, int], float]
    ema_decay: Callable[[int], float] | None = None
    checkpoint_seconds: float | None = None
    time_budget: float | None = None
    probe_steps: int = 200
    save_on_close: bool = False
    steps_per_epoch: int | None = None


def new_net(seed: int, *, diam_mean: float | None = None):
    """A freshly initialised CPnet, seeded without touching the global torch RNG.

    Examples
    --------
    >>> import torch
    >>> a, b = new_net(0), new_net(0)
    >>> all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    True
    """
    from cp2_engine.network import CPnet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CPnet() if diam_mean is None else CPnet(diam_mean=diam_mean)


def _ema_copy(net) -> dict:
    return {k: v.detach().clone().float() for k, v in net.state_dict().items()}


def _update_ema(ema: dict, net: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        floats, sources = [], []
        for k, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                floats.append(ema[k])
                sources.append(v.detach().float())
            else:
                ema[k].copy_(v)
        torch._foreach_mul_(floats, decay)
        torch._foreach_add_(floats, sources, alpha=1 - decay)


def _forward(state: TrainState, x):
    """The network's flow/probability output under the run's precision."""
    with autocast_for(state.precision, state.device):
        return state.net(x)[0]


def _sgd_step(state: TrainState, x, target, *, lr: float, ema_decay: float | None) -> float:
    """One SGD step at learning rate ``lr``; return the loss."""
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    loss = flow_loss(_forward(state, x), target)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"training diverged (loss {value} at step {state.step}); "
                                 "lower the learning rate or check the data")  # fmt: skip
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    if ema_decay is not None:
        _update_ema(state.ema, state.net, ema_decay)
    state.step += 1
    state.losses.append(value)
    return value


def _budget_steps(budget: float, elapsed: float, done: int, step: int) -> int:
    rate = done / max(elapsed, 1e-9)
    total = max(step, int((budget - elapsed) * rate) + step)
    logger.info("%.2f steps/s: this run takes %d steps in all", rate, total)
    return total


def _step_event(state: TrainState, plan: StepPlan, loss: float, lr: float) -> StepEvent:
    """The event of the step just taken: ``done`` of the run's steps (None: budget not fixed)."""
    total = state.total_steps or (None if plan.time_budget else plan.steps)
    text = f"step {state.step}/{total or '?'} · loss {loss:.4f} · lr {lr:.3g}"
    epoch = None
    if plan.steps_per_epoch:
        epoch = (state.step - 1) // plan.steps_per_epoch
        text = f"epoch {epoch + 1}/{plan.steps // plan.steps_per_epoch} · {text}"
    return StepEvent(loss, lr, state.seconds, epoch, done=state.step, total=total, message=text)


def run_steps(
    state: TrainState,
    batches: Iterator,
    plan: StepPlan,
    *,
    save: Callable[[], CheckpointSaved] | None,
    record: Callable[[float, float], None] | None = None,
    after_step: Callable[[], Iterable[TrainEvent]] | None = None,
) -> Generator[TrainEvent, None, None]:
    """Take SGD steps until ``plan.steps`` (or the time budget's count) are done.

    On a CPU the glibc allocator is tuned first (:func:`cp2_engine.util.tune_allocator`).
    Per step: the SGD step, ``record(loss, lr)`` (bookkeeping that must precede the event, e.g.
    a log line), a :class:`StepEvent`, the events of ``after_step()`` (e.g. the end of an
    epoch) and a checkpoint when ``plan.checkpoint_seconds`` have passed. Closing the
    generator saves first when ``plan.save_on_close`` and steps were taken since the last save.

    Parameters
    ----------
    state : TrainState
        Advanced in place.
    batches : iterator
        ``(x, target)`` of each step, on the state's device (:func:`flow_loss` targets).
    plan : StepPlan
    save : callable
        ``save() -> CheckpointSaved``: writes a checkpoint (:meth:`TrainState.save_checkpoint`).
    record, after_step : callable, optional
        See above.

    Yields
    ------
    TrainEvent
        :class:`StepEvent`, the events of ``after_step`` and :class:`CheckpointSaved`.

    Examples
    --------
    >>> import torch
    >>> state = TrainState.create(new_net(0), precision="fp32", learning_rate=0.01)
    >>> batch = (torch.zeros(1, 2, 32, 32), torch.zeros(1, 3, 32, 32))
    >>> plan = StepPlan(steps=2, learning_rate=lambda step, total: 0.01)
    >>> events = list(run_steps(state, iter([batch, batch]), plan, save=None))
    >>> [type(e).__name__ for e in events], state.step
    (['StepEvent', 'StepEvent'], 2)
    """
    if state.device.type == "cpu":
        tune_allocator()  # glibc re-faults every freed activation otherwise: ~1.4x per CPU step
    start = state.step
    t_start = t_prev = last_save = time.perf_counter()
    try:
        while state.step < (state.total_steps or plan.steps):
            total = state.total_steps or plan.steps
            lr = plan.learning_rate(state.step, total)
            decay = plan.ema_decay(state.step) if plan.ema_decay is not None else None
            x, target = next(batches)
            loss = _sgd_step(state, x, target, lr=lr, ema_decay=decay)
            now = time.perf_counter()
            state.seconds, t_prev = state.seconds + now - t_prev, now
            done = state.step - start
            if plan.time_budget and state.total_steps is None and done == plan.probe_steps:
                state.total_steps = _budget_steps(plan.time_budget, now - t_start, done,
                                                  state.step)  # fmt: skip
            if record is not None:
                record(loss, lr)
            yield _step_event(state, plan, loss, lr)
            if after_step is not None:
                yield from after_step()
            due = plan.checkpoint_seconds is not None and now - last_save > plan.checkpoint_seconds
            if due and state.step < (state.total_steps or plan.steps):
                yield save()
                last_save = time.perf_counter()
    except GeneratorExit:
        if save is not None and plan.save_on_close and state.step > state.saved_step:
            save()
        logger.info("training stopped at step %d; the last checkpoint is at step %d",
                    state.step, state.saved_step)  # fmt: skip
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a cp2 training checkpoint (``<model>.ckpt`` or a recipe's ``cycle<k>/train.ckpt``).

    Returns a dict with ``net``, ``optimizer``, ``scaler``, ``ema``, ``step`` (steps done),
    ``losses`` (per step), ``seconds``, ``total_steps``, ``precision`` and the records of the
    run (``epoch`` = last finished epoch of an epoch run, ``epoch_losses``, ``test_losses``,
    ``n_images``, ``diam_labels``, ``config``, ``hardware``, ``init``; None where unused).
    Checkpoints of the older recipe format are converted.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is corrupt, not a cp2 training checkpoint, holds objects other than tensors
        and plain Python values (it is loaded with ``weights_only=True``), or was written by
        the epoch trainer of an older cp2 (version 1), which cannot be resumed.

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
    try:  # weights_only: tensors and plain Python values only, so a checkpoint cannot run code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, EOF, runtime) on bad files
        raise ValueError(f"training checkpoint {path} is corrupt or unreadable: {err}") from err
    if isinstance(ckpt, dict) and ckpt.get("format") == _OLD_RECIPE_FORMAT:
        return _from_old_recipe(ckpt)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not a cp2 training checkpoint (no '{CKPT_FORMAT}' marker)")
    if ckpt.get("version") != CKPT_VERSION:
        raise ValueError(
            f"training checkpoint {path} was written by an older cp2 (checkpoint version "
            f"{ckpt.get('version')}, this cp2 reads version {CKPT_VERSION}) and cannot be "
            "resumed; delete it to train from the start (cp2 train: --restart; a HITL round: "
            "retrain(restart=True) or --restart)"
        )
    return ckpt


def _from_old_recipe(ckpt: dict) -> dict:
    """The current format of a checkpoint written by the older recipe trainer."""
    new = {"format": CKPT_FORMAT, "version": CKPT_VERSION, "net": ckpt["net"],
           "optimizer": ckpt["opt"], "scaler": {}, "precision": None}  # fmt: skip
    for key in ("ema", "step", "losses", "seconds", "total_steps", "hardware", "init"):
        new[key] = ckpt[key]
    return new | {key: None for key in _RECORDS if key not in new}


def trim_log(path: str | os.PathLike, key: str, start: int) -> None:
    """Drop the JSON-lines log records whose ``key`` is >= ``start`` (and a torn last line).

    A resumed run logs its steps (or epochs) again from ``start``; what a crashed session
    logged after its last checkpoint goes.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     log = Path(tmp) / "log.jsonl"
    ...     _ = log.write_text('{"step": 0}\\n{"step": 1}\\n{"st')
    ...     trim_log(log, "step", 1)
    ...     log.read_text()
    '{"step": 0}\\n'
    """
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = [ln for ln in lines if ln.endswith("\n") and json.loads(ln)[key] < start]
    if len(keep) != len(lines):
        atomic_write_file(path, lambda fh: fh.write("".join(keep).encode("utf-8")))
