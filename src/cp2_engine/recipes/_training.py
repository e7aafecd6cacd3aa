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
exactly the run that was interrupted. The recipe's ``precision`` ("auto", "fp32", "bf16",
"fp16"; default "auto") goes through cp2's one precision policy
(:func:`cp2_engine.network.resolve_precision`); old recipes that say ``bf16 = true/false`` are
read as ``precision = "bf16"/"fp32"``.

Files in ``out``: ``data.pt`` (the prepared images), and per cycle ``cycle<k>/train.ckpt`` (the
resume checkpoint: saved every ``checkpoint_seconds``, at the end of the cycle and when the
generator is closed), ``cycle<k>/train_log.jsonl`` (one line per step) and, once the cycle is
finished, ``cycle<k>/<name>`` (the exported float32 EMA weights with a ``.json`` sidecar). A
finished cycle is skipped on the next call; an unfinished one resumes.

The parts: ``_schedule.py`` (learning rate, EMA decay, seeded batches), ``_cycle.py`` (one
cycle on the step driver of :mod:`cp2_engine.training`: its one checkpoint format, EMA, time
budget, export), ``_events.py`` (events and results).
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np
import torch

from cp2_engine.recipes._cycle import _CycleSpec, _finished_cycle, _Options, _train_cycle
from cp2_engine.recipes._data import (
    MODELS_DIR,
    BundledRecipe,
    default_data_root,
    load_bundled_recipe,
    prepare_data,
    sampling_weights,
)
from cp2_engine.recipes._events import CycleResult, DataPrepared, RecipeResult, cycle_finished
from cp2_engine.recipes._install import Installed, install_recipe
from cp2_engine.training import TrainEvent
from cp2_engine.util import drain

TIME_PROBE_STEPS = 200


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
        "auto", "cpu", "cuda", ... (the recipe's ``precision`` decides the autocast).
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
        :class:`DataPrepared`, :class:`CycleStarted` (the cycle number),
        :class:`cp2_engine.training.StepEvent` (``done`` = steps within the cycle, ``epoch``
        None), :class:`cp2_engine.training.CheckpointSaved` (``done`` = the cycle's steps,
        ``epoch`` None), :class:`CycleFinished` and, with ``install``,
        :class:`cp2_engine.recipes.Installed`.

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
            installed = install_recipe(
                recipe, results, data_root=root, models_dir=models_dir or MODELS_DIR,
                which=which, max_per_type=max_per_type, device=device,
            )  # fmt: skip
            ap = installed.validation["diameter_gt"]["all"]
            yield Installed(installed.weights, ap, done=1, total=1,
                            message=f"installed {installed.weights}; validation AP@0.5 "
                            f"{ap['ap50']:.3f}")  # fmt: skip
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
            yield cycle_finished(k, done.steps, float(np.mean(done.losses[-50:])), done.seconds,
                                 done.export, skipped=True)  # fmt: skip
            continue
        if items is None:
            t0 = time.perf_counter()
            items = prepare_data(recipe, root, cache=out / "data.pt")
            probs = sampling_weights(items, recipe)
            torch.set_num_threads(threads)  # numba's OpenMP pool may have changed it
            seconds = time.perf_counter() - t0
            yield DataPrepared(
                seconds,
                done=len(items),
                total=len(items),
                message=f"{len(items)} training images ready ({seconds:.0f} s)",
            )
        start = Path(init) if k == 1 and init is not None else None
        spec = _CycleSpec(k, len(plan), steps, folder, results[-1].export if k > 1 else start)
        results.append((yield from _train_cycle(spec, recipe, items, probs, opts)))
    return results


def train_recipe(recipe: str | os.PathLike | BundledRecipe, **options) -> RecipeResult:
    """Run :func:`iter_train_recipe` to the end and return its :class:`RecipeResult`.

    Parameters
    ----------
    recipe : path or BundledRecipe
        As for :func:`iter_train_recipe`.
    **options
        out (required), data_root, device, workers, cycles, time_budget, probe_steps, init,
        threads, install, models_dir, which, max_per_type: as for :func:`iter_train_recipe`.

    Returns
    -------
    RecipeResult

    Examples
    --------
    >>> result = train_recipe("recipes/cp2_cyto.toml", out="ckpt/cyto")  # doctest: +SKIP
    >>> result.export.name  # doctest: +SKIP
    'cp2_cyto'
    """
    return drain(iter_train_recipe(recipe, **options))
