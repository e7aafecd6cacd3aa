"""Files and inputs of a HITL project: atomic writes, image and label checks, names, settings.

Private helpers of :class:`cp2_engine.hitl.HitlProject` and of its retraining rounds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cp2_engine.hitl._accounting import check_labels
from cp2_engine.io import imread, imwrite
from cp2_engine.util import atomic_write

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=1) + "\n")


def _write_tif(path: Path, array: np.ndarray, *, overwrite: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    imwrite(path, array, overwrite=overwrite)


def _labels_dtype(labels: np.ndarray) -> np.ndarray:
    big = labels.max(initial=0) > np.iinfo(np.uint16).max
    return labels.astype(np.uint32 if big else np.uint16)


def _check_image(image: Any, what: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty (H, W) or (H, W, C) image, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) and not np.iscomplexobj(arr)):
        raise TypeError(f"{what} must hold real numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr


def _spatial_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(H, W) of an image shape: (H, W), (H, W, C) or channel-first (C, H, W) with C < 10."""
    if len(shape) == 3 and shape[0] < 10 <= min(shape[1], shape[2]):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _load_input(item: Any, what: str) -> tuple[np.ndarray, str | None]:
    """An image from a path or an array; also return the path's stem as a name suggestion."""
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"{what}: no such image file {path}")
        return _check_image(imread(path), what), path.stem
    return _check_image(item, what), None


def _unique_names(suggested: Sequence[str | None]) -> list[str]:
    names: list[str] = []
    for i, name in enumerate(suggested):
        base = re.sub(r"[^A-Za-z0-9._-]", "_", name) if name else f"image_{i:03d}"
        base = base.lstrip("._-") or f"image_{i:03d}"
        candidate, k = base, 1
        while candidate in names:
            candidate, k = f"{base}_{k}", k + 1
        names.append(candidate)
    return names


def _check_names(names: list[str], n: int) -> None:
    if len(names) != n:
        raise ValueError(f"names must have one entry per image ({n}), got {len(names)}")
    if len(set(names)) != n:
        raise ValueError(f"image names must be unique, got {names}")
    bad = [x for x in names if not _NAME_RE.match(x)]
    if bad:
        raise ValueError(f"image names may hold only letters, digits and ._- : {bad}")


def _check_truth(truth: Sequence[Any] | None, images: list[np.ndarray]) -> list:
    if truth is None:
        return [None] * len(images)
    if len(truth) != len(images):
        raise ValueError(f"ground_truth needs one entry per image ({len(images)})")
    out = []
    for i, (t, img) in enumerate(zip(truth, images)):
        if t is None:
            out.append(None)
            continue
        lab = check_labels(
            imread(t) if isinstance(t, str | os.PathLike) else t,
            name=f"ground_truth[{i}]",
        )
        if lab.shape != _spatial_shape(img.shape):
            raise ValueError(
                f"ground_truth[{i}] shape {lab.shape} != image {_spatial_shape(img.shape)}"
            )
        out.append(lab)
    return out


#: The model a new project fine-tunes unless told otherwise: the bundled whole-cell generalist.
DEFAULT_INITIAL_MODEL = "cp2_cyto"


def _check_initial_model(initial_model: Any) -> str:
    """``initial_model`` (None: the default) once cp2 finds it (ModelNotFoundError if not)."""
    if initial_model is None:
        return DEFAULT_INITIAL_MODEL
    if str(initial_model) != "scratch":
        from cp2_engine.network import find_model

        find_model(initial_model)
    return str(initial_model)


def _config_to_dict(config: Any) -> dict | None:
    if config is None:
        return None
    if dataclasses.is_dataclass(config):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(config).items()}
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"train_config must be a TrainConfig, a dict or None, got {type(config)}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value
