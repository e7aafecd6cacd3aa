"""The recipe schedule: learning rate and EMA decay per step, and the seeded batch of a step.

The batch of step ``k`` is drawn from ``numpy.random.default_rng([seed, k])``, so batches made in
worker processes (``workers > 0``) are the same as those made in this process.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cp2_engine.recipes._data import BundledRecipe, Item, ScheduleConfig


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
