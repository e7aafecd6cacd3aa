"""Epoch runs: the starting network, the images of an epoch, one batch and the test loss."""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

from cp2_engine.network import autocast_for, use_channels_last
from cp2_engine.training._augment import random_rotate_and_resize
from cp2_engine.training._config import TrainConfig
from cp2_engine.training._driver import new_net
from cp2_engine.training._losses import flow_loss
from cp2_engine.training._prepare import _Data


def _resolve_net(model_or_net, seed: int) -> tuple[torch.nn.Module, bool]:
    """Return ``(a private copy of the net to train, whether it is pretrained)``."""
    if model_or_net is None or (isinstance(model_or_net, str) and model_or_net == "scratch"):
        return new_net(seed), False
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
    if use_channels_last(config.channels_last, torch.device(device), training=True):
        x = x.contiguous(memory_format=torch.channels_last)
    return x, batch.target()


def _test_loss(net, data: _Data, config: TrainConfig, diam_mean: float, device,
               precision: str) -> float:  # fmt: skip
    rng = np.random.default_rng([config.seed, 2**31])
    net.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data.x), config.batch_size):
            idx = np.arange(start, min(start + config.batch_size, len(data.x)))
            x, target = _batch(data, idx, rng, config, diam_mean, device, train=False)
            with autocast_for(precision, device):
                y = net(x)[0]
            total += float(flow_loss(y, target)) * len(idx)
            count += len(idx)
    net.train()
    return total / count
