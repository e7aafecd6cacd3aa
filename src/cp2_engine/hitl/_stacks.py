"""z-stacks in a HITL project: stack images ``(Z, Y, X)`` / ``(Z, Y, X, C)`` and their 3-D labels.

Private helpers of :class:`cp2_engine.hitl.HitlProject`. A project made with ``stacks=True``
holds z-stacks: ``project.json`` marks each image ``"stack": true``, its labels (prediction,
corrected, truth) are ``(Z, Y, X)``, :meth:`HitlProject.predict` segments it in 3-D
(``do_3d=True`` with the train config's ``anisotropy``, unless told otherwise) and retraining
trains on its planes in three orientations (``cp2_engine.training.stack_to_planes``, through
``iter_train``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cp2_engine.hitl._project_files import _check_truth, _load_input, _spatial_shape


def _load_stack(item: Any, what: str) -> tuple[np.ndarray, str | None]:
    """A z-stack from a path or an array (checked like a 2-D image, with Z first)."""
    from cp2_engine.io import imread

    if isinstance(item, str | os.PathLike):
        if not Path(item).is_file():
            raise FileNotFoundError(f"{what}: no such image file {item}")
        arr, stem = np.asarray(imread(item)), Path(item).stem
    else:
        arr, stem = np.asarray(item), None
    if arr.ndim not in (3, 4) or min(arr.shape[:3]) < 2 or (arr.ndim == 4 and arr.shape[3] > 9):
        raise ValueError(
            f"{what} must be a z-stack (Z, Y, X) or (Z, Y, X, C) with C < 10 and every other "
            f"axis >= 2 (stacks=True), got shape {arr.shape}"
        )
    for plane in arr if arr.ndim == 4 else [arr]:  # real and finite, as 2-D images are
        _load_input(plane, what)
    return arr, stem


def load_inputs(images: Sequence[Any], ground_truth, *, stacks: bool):
    """``([(array, name suggestion)], [truth or None])`` of the images given to ``create``."""
    if not stacks:
        loaded = [_load_input(im, f"images[{i}]") for i, im in enumerate(images)]
        return loaded, _check_truth(ground_truth, [a for a, _ in loaded])
    loaded = [_load_stack(im, f"images[{i}]") for i, im in enumerate(images)]
    if ground_truth is None:
        return loaded, [None] * len(loaded)
    if len(ground_truth) != len(loaded):
        raise ValueError(f"ground_truth needs one entry per image ({len(loaded)})")
    truths = [
        None if t is None else _check_stack_truth(t, a.shape[:3], i)
        for i, (t, (a, _)) in enumerate(zip(ground_truth, loaded))
    ]
    return loaded, truths


def _check_stack_truth(truth, shape, index: int) -> np.ndarray:
    from cp2_engine.hitl._accounting import check_labels
    from cp2_engine.io import imread

    arr = imread(truth) if isinstance(truth, str | os.PathLike) else truth
    lab = check_labels(arr, name=f"ground_truth[{index}]")
    if lab.shape != tuple(shape):
        raise ValueError(f"ground_truth[{index}] shape {lab.shape} != stack {tuple(shape)}")
    return lab


def spatial_shape_of(entry: dict) -> tuple[int, ...]:
    """Label shape of a ``project.json`` image entry: ``(Z, Y, X)`` for a stack, else ``(H, W)``.

    Examples
    --------
    >>> spatial_shape_of({"name": "s", "shape": [5, 40, 40, 2], "stack": True})
    (5, 40, 40)
    >>> spatial_shape_of({"name": "a", "shape": [2, 40, 40]})
    (40, 40)
    """
    if entry.get("stack"):
        return tuple(int(n) for n in entry["shape"][:3])
    return _spatial_shape(entry["shape"])


def stack_segment_kwargs(entry: dict, train_config: dict | None, kwargs: dict) -> dict:
    """``Model.segment`` options for a project image: for a stack, true 3-D by default (unless
    ``stitch_threshold`` is given) with the train config's anisotropy."""
    if not entry.get("stack"):
        return kwargs
    out = dict(kwargs)
    if not out.get("stitch_threshold"):
        out.setdefault("do_3d", True)
        if out["do_3d"]:
            out.setdefault("anisotropy", (train_config or {}).get("anisotropy"))
    if len(entry["shape"]) == 4:
        out.setdefault("channel_axis", 3)
    return out
