"""Train one cycle of a recipe on the step driver (:func:`cp2_engine.training.run_steps`): EMA,
checkpoints every ``checkpoint_seconds`` and on close, a time budget, the export.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cp2_engine.recipes._data import BundledRecipe
from cp2_engine.recipes._events import CycleResult, CycleStarted, cycle_finished
from cp2_engine.recipes._schedule import _batches, ema_decay, learning_rate
from cp2_engine.training import (
    CheckpointSaved,
    StepPlan,
    TrainState,
    load_checkpoint,
    new_net,
    run_steps,
    trim_log,
)

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


def _new_state(recipe: BundledRecipe, device: torch.device) -> TrainState:
    """The recipe's seeded CPnet with SGD and an EMA, on ``device`` (never channels-last)."""
    net = new_net(recipe.seed, diam_mean=recipe.diam_mean)
    net.diam_labels.data.fill_(recipe.diam_mean)
    cfg = recipe.train
    return TrainState.create(
        net, device=device, precision=cfg.precision, learning_rate=cfg.learning_rate,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay, ema=True, channels_last=False,
    )  # fmt: skip


def _initialise(state: TrainState, init: Path) -> dict:
    """Start from exported weights (a further cycle): new EMA, fresh optimizer state."""
    from cp2_engine.network import load_state_dict, read_metadata, sha256_file

    state.net.load_state_dict(load_state_dict(init))
    state.reset_ema()
    previous = (read_metadata(init) or {}).get("training", {})
    logger.info("initialised from %s", init)
    return {"file": str(init), "sha256": sha256_file(init), "training": previous}


def _hardware(device: torch.device, precision: str) -> str:
    if device.type == "cuda":
        return f"1 GPU ({torch.cuda.get_device_name(device)}), {precision} autocast"
    return f"{torch.get_num_threads()} CPU threads ({device.type}), {precision}"


def exported_net(ckpt: dict, recipe: BundledRecipe, *, which: str = "ema"):
    """A CPnet (eval mode, CPU) with the EMA (default) or raw weights of a cycle checkpoint.

    Examples
    --------
    >>> from cp2_engine.training import load_checkpoint
    >>> net = exported_net(load_checkpoint(p), recipe)  # doctest: +SKIP
    """
    from cp2_engine.network import CPnet

    if which not in ("ema", "raw"):
        raise ValueError(f"which must be 'ema' or 'raw', got {which!r}")
    net = CPnet(diam_mean=recipe.diam_mean)
    state = ckpt["ema"] if which == "ema" else ckpt["net"]
    net.load_state_dict({k: v.cpu() for k, v in state.items()})
    net.diam_labels.data.fill_(recipe.diam_mean)
    return net.eval()


def _cycle_record(state: TrainState, recipe: BundledRecipe, meta: dict) -> dict:
    return {
        "steps": state.step, "seconds": round(state.seconds, 1), "hardware": meta["hardware"],
        "seed": recipe.seed, "final_loss_mean50": round(float(np.mean(state.losses[-50:])), 4),
        "initialised_from": meta["init"],
    }  # fmt: skip


def _export(state: TrainState, recipe: BundledRecipe, folder: Path, meta: dict) -> Path:
    from cp2_engine.network import save_model

    path = folder / recipe.name
    record = {"name": recipe.name, "recipe": str(recipe.path), "storage": "float32 EMA weights",
              "training": _cycle_record(state, recipe, meta)}  # fmt: skip
    save_model(exported_net({"ema": state.ema}, recipe), path, metadata=record)
    return path


def _start_state(spec: _CycleSpec, recipe: BundledRecipe, device) -> tuple[TrainState, dict]:
    """The cycle's state, resumed from its checkpoint or initialised; its hardware and init."""
    ckpt_path = spec.folder / "train.ckpt"
    state, meta = _new_state(recipe, device), {"hardware": None, "init": None}
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        state.restore(ckpt, ckpt_path)
        meta = {"hardware": ckpt["hardware"], "init": ckpt["init"]}
        logger.info("resumed from %s at step %d", ckpt_path, state.step)
    if state.step == 0 and spec.init is not None:
        meta["init"] = _initialise(state, spec.init)
    meta["hardware"] = meta["hardware"] or _hardware(device, state.precision)
    return state, meta


def _on_device(batches, device):
    for batch in batches:
        yield tuple(t.to(device, non_blocking=True) for t in batch)


def _train_cycle(spec: _CycleSpec, recipe: BundledRecipe, items, probs, opts: _Options):
    """One cycle on the step driver: EMA, checkpoints every ``checkpoint_seconds``, export."""
    ckpt_path, log_path = spec.folder / "train.ckpt", spec.folder / "train_log.jsonl"
    spec.folder.mkdir(parents=True, exist_ok=True)
    state, meta = _start_state(spec, recipe, opts.device)
    cfg, start = recipe.train, state.step
    steps = state.total_steps or spec.steps
    total = None if opts.time_budget and not state.total_steps else steps
    text = f"cycle {spec.cycle}/{spec.n_cycles}"
    text += f" resumes at step {start}" if start else f": {total or '?'} steps on {opts.device}"
    yield CycleStarted(spec.cycle, spec.n_cycles, str(opts.device),
                       meta["init"]["file"] if meta["init"] else None, done=start, total=total,
                       message=text)  # fmt: skip
    trim_log(log_path, "step", start)
    plan = StepPlan(
        steps=spec.steps, learning_rate=lambda step, total: learning_rate(step, total, cfg),
        ema_decay=lambda step: ema_decay(step, cfg), checkpoint_seconds=cfg.checkpoint_seconds,
        time_budget=opts.time_budget, probe_steps=opts.probe_steps, save_on_close=True,
    )  # fmt: skip
    batches = _on_device(_batches(items, probs, recipe, start, opts.workers), opts.device)
    state.net.train()
    with open(log_path, "a", encoding="utf-8") as log:

        def record(loss: float, lr: float) -> None:
            log.write(json.dumps({"step": state.step - 1, "loss": loss, "lr": lr,
                                  "seconds": round(state.seconds, 2)}) + "\n")  # fmt: skip

        def save() -> CheckpointSaved:
            log.flush()
            state.save_checkpoint(ckpt_path, **meta)
            total = state.total_steps or (None if opts.time_budget else spec.steps)
            text = f"checkpoint saved after step {state.step}"
            return CheckpointSaved(ckpt_path, done=state.step, total=total, message=text)

        yield from run_steps(state, batches, plan, save=save, record=record)
        yield save()
    export = _export(state, recipe, spec.folder, meta)
    mean50 = float(np.mean(state.losses[-50:]))
    yield cycle_finished(spec.cycle, state.step, mean50, state.seconds, export, skipped=False)
    return CycleResult(spec.cycle, state.step, tuple(state.losses), state.seconds, export,
                       meta["hardware"], meta["init"])  # fmt: skip


def _finished_cycle(folder: Path, recipe: BundledRecipe, cycle: int) -> CycleResult:
    ckpt = load_checkpoint(folder / "train.ckpt")
    return CycleResult(cycle, ckpt["step"], tuple(ckpt["losses"]), ckpt["seconds"],
                       folder / recipe.name, ckpt["hardware"], ckpt["init"])  # fmt: skip
