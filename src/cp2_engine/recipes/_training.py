"""Train a bundled model (cp2_nuclei, cp2_cyto) from its recipe: resumable, cycle by cycle.

:func:`iter_train_recipe` prepares the data of a bundled-model recipe
(:mod:`cp2_engine.recipes._data`), trains every cycle and yields progress events;
:func:`train_recipe` drains it. ``cp2 train --recipe recipes/cp2_nuclei.toml --out DIR`` runs it.

Schedule: a *cycle* is one whole schedule of ``n`` SGD steps: linear warm-up over
``warmup_steps``, constant, then a linear decay to 0 over the last ``anneal_fraction`` of the
steps; an exponential moving average (EMA) of the weights is kept and exported.
``train.cycles = [n1, n2]`` runs two cycles, the second starting from the first's exported EMA
weights (with a fresh optimizer); ``train.steps = n`` is one cycle. The batch of step ``k`` is
drawn from ``numpy.random.default_rng([seed, k])`` (in every cycle), so a resumed run replays
exactly the run that was interrupted. CUDA runs under bfloat16 autocast; on the CPU the recipe's
``bf16`` decides.

Files in ``out``: ``data.pt`` (the prepared images), and per cycle ``cycle<k>/train.ckpt`` (the
resume checkpoint: saved every ``checkpoint_seconds``, at the end of the cycle and when the
generator is closed), ``cycle<k>/train_log.jsonl`` (one line per step) and, once the cycle is
finished, ``cycle<k>/<name>`` (the exported float32 EMA weights with a ``.json`` sidecar). A
finished cycle is skipped on the next call; an unfinished one resumes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cp2_engine.recipes._data import (
    MODELS_DIR,
    BundledRecipe,
    Item,
    ScheduleConfig,
    default_data_root,
    load_bundled_recipe,
    prepare_data,
    sampling_weights,
)
from cp2_engine.training import CheckpointSaved, StepEvent, TrainEvent
from cp2_engine.util import drain

logger = logging.getLogger(__name__)

CKPT_FORMAT = "cp2-recipe-checkpoint"
TIME_PROBE_STEPS = 200


# ----------------------------------------------------------------------------- schedule
def learning_rate(step: int, steps: int, cfg: ScheduleConfig) -> float:
    """Linear warm-up, constant, then a linear decay to 0 over the last ``anneal_fraction``.

    Examples
    --------
    >>> cfg = ScheduleConfig((100,), 8, 64, 0.5, 0.2, 0.9, 0.0, 10, 0.5, 0.99)
    >>> learning_rate(0, 100, cfg), learning_rate(20, 100, cfg), learning_rate(75, 100, cfg)
    (0.02, 0.2, 0.1)
    """
    start = int(steps * (1 - cfg.anneal_fraction))
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    if step >= start:
        return cfg.learning_rate * (steps - step) / max(1, steps - start)
    return cfg.learning_rate


def ema_decay(step: int, cfg: ScheduleConfig) -> float:
    """EMA decay: 0 during warm-up, then ``min(ema_decay, (1 + k) / (10 + k))``.

    Examples
    --------
    >>> cfg = ScheduleConfig((100,), 8, 64, 0.5, 0.2, 0.9, 0.0, 10, 0.5, 0.99)
    >>> ema_decay(5, cfg), ema_decay(10, cfg)
    (0.0, 0.1)
    """
    k = step - cfg.warmup_steps
    return 0.0 if k < 0 else min(cfg.ema_decay, (1 + k) / (10 + k))


def make_batch(items: Sequence[Item], probs: np.ndarray, step: int, recipe: BundledRecipe):
    """The augmented ``(images, target)`` batch of ``step`` (seeded by ``(seed, step)``).

    Examples
    --------
    >>> x, target = make_batch(items, probs, 0, recipe)  # doctest: +SKIP
    """
    from cp2_engine.training import random_rotate_and_resize

    cfg = recipe.train
    rng = np.random.default_rng([recipe.seed, step])
    idx = rng.choice(len(items), size=cfg.batch_size, p=probs)
    batch = random_rotate_and_resize(
        [items[i].x for i in idx], [items[i].labels for i in idx], [items[i].flows for i in idx],
        rng=rng, bsize=cfg.bsize, scale_range=cfg.scale_range,
    )  # fmt: skip
    return batch.images, batch.target()


class _StepBatches(torch.utils.data.Dataset):
    """Step number -> its batch, so batches can be made in worker processes."""

    def __init__(self, items, probs, recipe: BundledRecipe) -> None:
        self.items, self.probs, self.recipe = items, probs, recipe

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, step: int):
        return make_batch(self.items, self.probs, step, self.recipe)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def _batches(items, probs, recipe: BundledRecipe, start: int, workers: int):
    dataset = _StepBatches(items, probs, recipe)
    if workers <= 0:
        return (dataset[step] for step in range(start, 10**9))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start, 10**9), num_workers=workers,
        prefetch_factor=8, pin_memory=torch.cuda.is_available(), worker_init_fn=_one_thread,
    )  # fmt: skip
    return iter(loader)


# ----------------------------------------------------------------------------- events / results
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


# ----------------------------------------------------------------------------- state
@dataclass
class _State:
    net: Any
    opt: Any
    ema: dict
    step: int = 0
    losses: list = field(default_factory=list)
    seconds: float = 0.0
    total_steps: int | None = None
    hardware: str | None = None
    init: dict | None = None


def _new_state(recipe: BundledRecipe) -> _State:
    from cp2_engine.network import CPnet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = CPnet(diam_mean=recipe.diam_mean)
    net.diam_labels.data.fill_(recipe.diam_mean)
    cfg = recipe.train
    opt = torch.optim.SGD(net.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)  # fmt: skip
    return _State(net, opt, _ema_copy(net))


def _ema_copy(net) -> dict:
    return {k: v.detach().clone().float() for k, v in net.state_dict().items()}


def load_recipe_checkpoint(path: str | os.PathLike) -> dict:
    """Read a cycle checkpoint (``cycle<k>/train.ckpt``) onto the CPU.

    Raises
    ------
    ValueError
        The file is not a cp2 recipe checkpoint.

    Examples
    --------
    >>> ckpt = load_recipe_checkpoint("out/cycle1/train.ckpt")  # doctest: +SKIP
    >>> ckpt["step"], len(ckpt["losses"])  # doctest: +SKIP
    (120, 120)
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not a cp2 recipe training checkpoint ({CKPT_FORMAT})")
    return ckpt


def _load_state(path: Path, recipe: BundledRecipe) -> _State:
    state = _new_state(recipe)
    if not path.is_file():
        return state
    ckpt = load_recipe_checkpoint(path)
    state.net.load_state_dict(ckpt["net"])
    state.opt.load_state_dict(ckpt["opt"])
    state.ema = ckpt["ema"]
    for key in ("step", "losses", "seconds", "total_steps", "hardware", "init"):
        setattr(state, key, ckpt[key])
    logger.info("resumed from %s at step %d", path, state.step)
    return state


def _save_state(path: Path, state: _State) -> None:
    from cp2_engine.io import atomic_write_file

    ckpt = {"format": CKPT_FORMAT, "net": state.net.state_dict(), "opt": state.opt.state_dict()}
    for key in ("ema", "step", "losses", "seconds", "total_steps", "hardware", "init"):
        ckpt[key] = getattr(state, key)
    atomic_write_file(path, lambda fh: torch.save(ckpt, fh))


def _initialise(state: _State, init: Path) -> None:
    """Start from exported weights (a further cycle): new EMA, fresh optimizer state."""
    from cp2_engine.network import load_state_dict, read_metadata, sha256_file

    state.net.load_state_dict(load_state_dict(init))
    state.ema = _ema_copy(state.net)
    previous = (read_metadata(init) or {}).get("training", {})
    state.init = {"file": str(init), "sha256": sha256_file(init), "training": previous}
    logger.info("initialised from %s", init)


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


def _autocast(device: torch.device, cfg: ScheduleConfig):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cfg.bf16 and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"1 GPU ({torch.cuda.get_device_name(device)}), bfloat16 autocast"
    return f"{torch.get_num_threads()} CPU threads ({device.type})"


def _to_device(state: _State, device: torch.device) -> None:
    state.net.to(device)
    for per_param in state.opt.state.values():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                per_param[key] = value.to(device)
    state.ema = {k: v.to(device) for k, v in state.ema.items()}


def exported_net(ckpt: dict, recipe: BundledRecipe, *, which: str = "ema"):
    """A CPnet (eval mode, CPU) with the EMA (default) or raw weights of a cycle checkpoint.

    Examples
    --------
    >>> net = exported_net(load_recipe_checkpoint(p), recipe)  # doctest: +SKIP
    """
    from cp2_engine.network import CPnet

    if which not in ("ema", "raw"):
        raise ValueError(f"which must be 'ema' or 'raw', got {which!r}")
    net = CPnet(diam_mean=recipe.diam_mean)
    state = ckpt["ema"] if which == "ema" else ckpt["net"]
    net.load_state_dict({k: v.cpu() for k, v in state.items()})
    net.diam_labels.data.fill_(recipe.diam_mean)
    return net.eval()


# ----------------------------------------------------------------------------- one cycle
@dataclass(frozen=True)
class _CycleSpec:
    cycle: int
    n_cycles: int
    steps: int
    folder: Path
    init: Path | None


@dataclass(frozen=True)
class _Options:
    device: torch.device
    workers: int
    time_budget: float | None
    probe_steps: int


def _sgd_step(state: _State, batch, steps: int, cfg: ScheduleConfig, device) -> tuple:
    from cp2_engine.training import flow_loss

    step = state.step
    lr = learning_rate(step, steps, cfg)
    for group in state.opt.param_groups:
        group["lr"] = lr
    x, target = (t.to(device, non_blocking=True) for t in batch)
    with _autocast(device, cfg):
        y = state.net(x)[0]
    loss = flow_loss(y.float(), target)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"training loss is {value} at step {step}")
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    state.opt.step()
    _update_ema(state.ema, state.net, ema_decay(step, cfg))
    state.step += 1
    state.losses.append(value)
    return value, lr


def _budget_steps(budget: float, elapsed: float, done: int, step: int) -> int:
    rate = done / max(elapsed, 1e-9)
    total = max(step, int((budget - elapsed) * rate) + step)
    logger.info("%.2f steps/s: this cycle runs %d steps in all", rate, total)
    return total


def _cycle_record(state: _State, recipe: BundledRecipe) -> dict:
    return {
        "steps": state.step, "seconds": round(state.seconds, 1), "hardware": state.hardware,
        "seed": recipe.seed, "final_loss_mean50": round(float(np.mean(state.losses[-50:])), 4),
        "initialised_from": state.init,
    }  # fmt: skip


def _export(state: _State, recipe: BundledRecipe, folder: Path) -> Path:
    from cp2_engine.network import save_model

    path = folder / recipe.name
    meta = {"name": recipe.name, "recipe": str(recipe.path), "storage": "float32 EMA weights",
            "training": _cycle_record(state, recipe)}  # fmt: skip
    save_model(exported_net({"ema": state.ema}, recipe), path, metadata=meta)
    return path


def _train_cycle(spec: _CycleSpec, recipe: BundledRecipe, items, probs, opts: _Options):
    ckpt_path = spec.folder / "train.ckpt"
    spec.folder.mkdir(parents=True, exist_ok=True)
    state = _load_state(ckpt_path, recipe)
    if state.step == 0 and spec.init is not None:
        _initialise(state, spec.init)
    steps = state.total_steps or spec.steps
    state.hardware = state.hardware or _hardware(opts.device)
    _to_device(state, opts.device)
    cfg, start = recipe.train, state.step
    yield CycleStarted(spec.cycle, spec.n_cycles, start, None if opts.time_budget and not
                       state.total_steps else steps, str(opts.device),
                       state.init["file"] if state.init else None)  # fmt: skip
    batches = _batches(items, probs, recipe, start, opts.workers)
    state.net.train()
    saved = start
    last_save = t_prev = t_start = time.perf_counter()
    try:
        with open(spec.folder / "train_log.jsonl", "a", encoding="utf-8") as log:
            while state.step < steps:
                loss, lr = _sgd_step(state, next(batches), steps, cfg, opts.device)
                now = time.perf_counter()
                state.seconds, t_prev = state.seconds + now - t_prev, now
                done = state.step - start
                if opts.time_budget and state.total_steps is None and done == opts.probe_steps:
                    steps = state.total_steps = _budget_steps(
                        opts.time_budget, now - t_start, done, state.step
                    )
                log.write(json.dumps({"step": state.step - 1, "loss": loss, "lr": lr,
                                      "seconds": round(state.seconds, 2)}) + "\n")  # fmt: skip
                yield StepEvent(spec.cycle, state.step - 1, loss, lr, state.seconds)
                if now - last_save > cfg.checkpoint_seconds and state.step < steps:
                    log.flush()
                    _save_state(ckpt_path, state)
                    saved, last_save = state.step, time.perf_counter()
                    yield CheckpointSaved(ckpt_path, state.step)
    except GeneratorExit:
        if state.step > saved:
            _save_state(ckpt_path, state)
        logger.info("cycle %d stopped at step %d; checkpoint %s", spec.cycle, state.step,
                    ckpt_path)  # fmt: skip
        raise
    _save_state(ckpt_path, state)
    yield CheckpointSaved(ckpt_path, state.step)
    export = _export(state, recipe, spec.folder)
    mean50 = float(np.mean(state.losses[-50:]))
    yield CycleFinished(spec.cycle, state.step, mean50, state.seconds, export, False)
    return CycleResult(spec.cycle, state.step, tuple(state.losses), state.seconds, export,
                       state.hardware, state.init)  # fmt: skip


def _finished_cycle(folder: Path, recipe: BundledRecipe, cycle: int) -> CycleResult:
    ckpt = load_recipe_checkpoint(folder / "train.ckpt")
    return CycleResult(cycle, ckpt["step"], tuple(ckpt["losses"]), ckpt["seconds"],
                       folder / recipe.name, ckpt["hardware"], ckpt["init"])  # fmt: skip


# ----------------------------------------------------------------------------- public API
def _check_args(plan: Sequence, workers: int, time_budget, init) -> None:
    if not plan or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in plan):
        raise ValueError(f"cycles must be a non-empty list of positive step counts, got {plan!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    if time_budget is not None and not time_budget > 0:
        raise ValueError(f"time_budget must be a positive number of seconds, got {time_budget}")
    if init is not None and not Path(init).is_file():
        raise FileNotFoundError(f"init weights not found: {init}")


def iter_train_recipe(
    recipe: str | os.PathLike | BundledRecipe,
    *,
    out: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    device: str = "auto",
    workers: int = 0,
    cycles: Sequence[int] | None = None,
    time_budget: float | None = None,
    probe_steps: int = TIME_PROBE_STEPS,
    init: str | os.PathLike | None = None,
    threads: int | None = None,
    install: bool = False,
    models_dir: str | os.PathLike | None = None,
    which: str = "ema",
    max_per_type: int | None = None,
) -> Generator[TrainEvent, None, RecipeResult]:
    """Train (or resume) every cycle of a bundled-model recipe, yielding progress events.

    Parameters
    ----------
    recipe : path or BundledRecipe
        The recipe (TOML with ``[[sources]]``) or its parsed form.
    out : path
        Training folder (created): ``data.pt`` and ``cycle<k>/`` checkpoints and exports.
    data_root : path, optional
        Folder holding the datasets (default :func:`cp2_engine.recipes._data.default_data_root`).
    device : str
        "auto", "cpu", "cuda", ... (CUDA trains under bfloat16 autocast).
    workers : int
        Processes making batches ahead (0 = in this process; same batches either way).
    cycles : sequence of int, optional
        Override the recipe's steps per cycle.
    time_budget : float, optional
        Seconds of training per new cycle: the cycle's step count is fixed after
        ``probe_steps`` timed steps and stored in its checkpoint (a resume keeps it).
    probe_steps : int
        Steps timed before ``time_budget`` fixes the step count.
    init : path, optional
        Weights that cycle 1 starts from (later cycles start from the previous export).
    threads : int, optional
        Torch CPU threads while this runs (default: the count in effect when called). It is
        set again after data preparation, whose numba kernels can change it, and the caller's
        count is restored at the end.
    install : bool
        After training, export float16 weights + size model + sidecar with the validation AP
        into ``models_dir`` (see :func:`cp2_engine.recipes._install.install_recipe`).
    models_dir : path, optional
        Install target (default: the package's ``models`` folder).
    which : {"ema", "raw"}
        Weights to install.
    max_per_type : int, optional
        Validate on at most this many images per image type.

    Yields
    ------
    TrainEvent
        :class:`DataPrepared`, :class:`CycleStarted`, :class:`cp2_engine.training.StepEvent`
        (``epoch`` holds the cycle number, ``step`` the step within the cycle),
        :class:`cp2_engine.training.CheckpointSaved` (``epoch`` holds the steps done),
        :class:`CycleFinished` and, with ``install``, :class:`cp2_engine.recipes.Installed`.

    Returns
    -------
    RecipeResult

    Examples
    --------
    >>> gen = iter_train_recipe("recipes/cp2_cyto.toml", out="ckpt/cyto")  # doctest: +SKIP
    >>> type(next(gen)).__name__  # doctest: +SKIP
    'DataPrepared'
    """
    from cp2_engine.network import resolve_device

    if not isinstance(recipe, BundledRecipe):
        recipe = load_bundled_recipe(recipe)
    plan = tuple(cycles) if cycles is not None else recipe.train.cycles
    _check_args(plan, workers, time_budget, init)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(data_root) if data_root is not None else default_data_root()
    opts = _Options(resolve_device(device), workers, time_budget, probe_steps)
    before = torch.get_num_threads()
    threads = threads or before
    try:
        torch.set_num_threads(threads)
        results = yield from _iter_cycles(recipe, plan, out, root, opts, init, threads)
        installed = None
        if install:
            from cp2_engine.recipes._install import Installed, install_recipe

            installed = install_recipe(
                recipe, results, data_root=root, models_dir=models_dir or MODELS_DIR,
                which=which, max_per_type=max_per_type, device=device,
            )  # fmt: skip
            yield Installed(installed.weights, installed.validation["diameter_gt"]["all"])
    finally:
        torch.set_num_threads(before)
    return RecipeResult(recipe, out, tuple(results), installed)


def _iter_cycles(recipe, plan, out: Path, root: Path, opts: _Options, init, threads: int):
    """Skip the finished cycles and train the others; return their :class:`CycleResult`\\ s."""
    results: list[CycleResult] = []
    items = probs = None
    for k, steps in enumerate(plan, start=1):
        folder = out / f"cycle{k}"
        if (folder / recipe.name).is_file():
            done = _finished_cycle(folder, recipe, k)
            results.append(done)
            yield CycleFinished(k, done.steps, float(np.mean(done.losses[-50:])), done.seconds,
                                done.export, True)  # fmt: skip
            continue
        if items is None:
            t0 = time.perf_counter()
            items = prepare_data(recipe, root, cache=out / "data.pt")
            probs = sampling_weights(items, recipe)
            torch.set_num_threads(threads)  # numba's OpenMP pool may have changed it
            yield DataPrepared(len(items), time.perf_counter() - t0)
        start = Path(init) if k == 1 and init is not None else None
        spec = _CycleSpec(k, len(plan), steps, folder, results[-1].export if k > 1 else start)
        results.append((yield from _train_cycle(spec, recipe, items, probs, opts)))
    return results


def train_recipe(recipe, **kwargs) -> RecipeResult:
    """Run :func:`iter_train_recipe` to the end and return its :class:`RecipeResult`.

    Examples
    --------
    >>> result = train_recipe("recipes/cp2_cyto.toml", out="ckpt/cyto")  # doctest: +SKIP
    >>> result.export.name  # doctest: +SKIP
    'cp2_cyto'
    """
    return drain(iter_train_recipe(recipe, **kwargs))
