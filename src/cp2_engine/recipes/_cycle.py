"""Train one cycle of a recipe: SGD steps with EMA, periodic checkpoints, the export."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cp2_engine.recipes._checkpoint import (
    _initialise,
    _load_state,
    _save_state,
    _State,
    _to_device,
    _update_ema,
    exported_net,
    load_recipe_checkpoint,
)
from cp2_engine.recipes._data import BundledRecipe, ScheduleConfig
from cp2_engine.recipes._events import CycleFinished, CycleResult, CycleStarted
from cp2_engine.recipes._schedule import _batches, ema_decay, learning_rate
from cp2_engine.training import CheckpointSaved, StepEvent

logger = logging.getLogger(__name__)


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
    _trim_log(spec.folder / "train_log.jsonl", start)
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


def _trim_log(path: Path, start: int) -> None:
    """Drop the log lines of steps after the checkpoint (logged before a crash, run again)."""
    from cp2_engine.util import atomic_write_file

    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = [ln for ln in lines if ln.endswith("\n") and json.loads(ln)["step"] < start]
    if len(keep) != len(lines):
        atomic_write_file(path, lambda fh: fh.write("".join(keep).encode("utf-8")))


def _finished_cycle(folder: Path, recipe: BundledRecipe, cycle: int) -> CycleResult:
    ckpt = load_recipe_checkpoint(folder / "train.ckpt")
    return CycleResult(cycle, ckpt["step"], tuple(ckpt["losses"]), ckpt["seconds"],
                       folder / recipe.name, ckpt["hardware"], ckpt["init"])  # fmt: skip
