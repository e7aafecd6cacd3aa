"""Text of tiny bundled-model recipes (TOML) for the recipe tests: seconds to train on the CPU."""

from __future__ import annotations

_REAL_SOURCE = """
[[sources]]
name = "real"
kind = "real"
dataset = "toy"
train_split = "splits/toy_train.csv"
val_split = "splits/toy_val.csv"
channels = [0, 0]
weight = {weight}
"""


def tiny_recipe(
    *,
    n_images: int = 3,
    n_val: int = 1,
    styles: tuple[str, ...] = ("fluorescence",),
    weight: float = 1.0,
    schedule: str = "steps = 1",
    train_extra: str = "",
    max_images: int = 1,
    real_source: bool = False,
) -> str:
    """A recipe named "tiny" (diam_mean 17) with one synthetic source of 64-px images.

    ``real_source`` adds a real source "real" (dataset "toy", splits in ``splits/``) before it,
    both weighted ``weight``; ``schedule`` is the ``[train]`` step line(s) (``steps = N`` or
    ``cycles = [...]``) and ``train_extra`` more ``[train]`` lines.
    """
    style_list = ", ".join(f'"{s}"' for s in styles)
    real = _REAL_SOURCE.format(weight=weight) if real_source else ""
    extra = f"{train_extra}\n" if train_extra else ""
    return f"""
name = "tiny"
description = "test model"
license = "BSD-3-Clause"
diam_mean = 17.0
seed = 3
{real}
[[sources]]
name = "synth"
kind = "synthetic"
n_images = {n_images}
seed = 1
n_val = {n_val}
val_seed = 7
shape = [64, 64]
diameter_range = [14.0, 18.0]
styles = [{style_list}]
nucleus = false
channels = [0, 0]
weight = {weight}

[train]
{schedule}
batch_size = 2
bsize = 32
scale_range = 0.5
learning_rate = 0.05
momentum = 0.9
weight_decay = 1e-5
warmup_steps = 1
anneal_fraction = 0.5
ema_decay = 0.9
{extra}
[size_model]
n_epochs = 1
bsize = 32
max_images = {max_images}
"""
