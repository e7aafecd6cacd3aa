"""Recipe training state: the net, optimizer and EMA weights, their checkpoint and export.

A cycle checkpoint (``cycle<k>/train.ckpt``) holds the net, the optimizer, the EMA weights, the
step, the per-step losses, the training seconds, the fixed step count of a ``time_budget`` run,
the hardware and the weights the cycle started from.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cp2_engine.recipes._data import BundledRecipe

logger = logging.getLogger(__name__)

CKPT_FORMAT = "cp2-recipe-checkpoint"


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
        The file is not a cp2 recipe checkpoint, is corrupt, or holds objects other than
        tensors and plain Python values (it is loaded with ``weights_only=True``).

    Examples
    --------
    >>> ckpt = load_recipe_checkpoint("out/cycle1/train.ckpt")  # doctest: +SKIP
    >>> ckpt["step"], len(ckpt["losses"])  # doctest: +SKIP
    (120, 120)
    """
    try:  # weights_only: tensors and plain Python values only, so a checkpoint cannot run code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, EOF, runtime) on bad files
        raise ValueError(f"recipe checkpoint {path} is unreadable or unsafe: {err}") from err
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
    from cp2_engine.util import atomic_write_file

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
