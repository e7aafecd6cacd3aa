"""Validate and install a model trained from a bundled-model recipe.

:func:`evaluate` segments a recipe's validation images (the ``val_split`` ids of its real
sources and ``n_val`` synthetic images drawn with ``val_seed``) and :func:`summarise` averages the
Cellpose AP (``TP / (TP + FP + FN)``) per source, per (source, image type) and over all images.
:func:`install_recipe` exports the last cycle's weights as float16, fits a size model and writes
``<name>``, ``<name>_size.npy`` and the ``<name>.json`` sidecar (data, recipe and its sha256,
steps per cycle, seed, validation AP, training cost) into a models folder.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cp2_engine.recipes._data import (
    REPO_ROOT,
    BundledRecipe,
    RealSource,
    default_data_root,
    read_split,
    real_pairs,
    synthetic_images,
)
from cp2_engine.training import TrainEvent

logger = logging.getLogger(__name__)

THRESHOLDS = (0.5, 0.75, 0.9)
AUTO_MAX = 4  # images per type validated with the size model's diameter (CPU time)


# ----------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class ValImage:
    """One validation image with its labels and evaluation settings."""

    source: str
    kind: str
    name: str
    image: np.ndarray
    labels: np.ndarray
    diameter: float
    channels: tuple


def _capped(rows: list[dict], max_per_type: int | None) -> list[dict]:
    if max_per_type is None:
        return rows
    counts: dict[str, int] = {}
    kept = []
    for row in rows:
        counts[row["type"]] = counts.get(row["type"], 0) + 1
        if counts[row["type"]] <= max_per_type:
            kept.append(row)
    return kept


def _real_val(source: RealSource, root: Path, max_per_type: int | None) -> Iterator[ValImage]:
    rows = _capped(read_split(source.val_split), max_per_type)
    for row, image, labels in real_pairs(source, root, rows):
        yield ValImage(source.name, row["type"], row["id"], image, labels,
                       float(row["median_diameter_px"]), source.channels)  # fmt: skip


def _synthetic_val(source, max_per_type: int | None) -> Iterator[ValImage]:
    from cp2_engine.metrics import diameters

    n = source.n_val
    if max_per_type is not None:  # styles cycle, so this keeps at most max_per_type per style
        n = min(n, max_per_type * len(source.styles))
    for i, (style, _, s) in enumerate(synthetic_images(source, seed=source.val_seed, n=n)):
        yield ValImage(source.name, style, f"{style}_{i}", s.image, s.labels,
                       float(diameters(s.labels)[0]), source.channels)  # fmt: skip


def validation_images(
    recipe: BundledRecipe, *, data_root: str | os.PathLike | None = None,
    max_per_type: int | None = None,
) -> Iterator[ValImage]:  # fmt: skip
    """Yield the validation images of every source of a bundled-model recipe.

    Examples
    --------
    >>> images = list(validation_images(recipe, max_per_type=2))  # doctest: +SKIP
    """
    root = Path(data_root) if data_root is not None else default_data_root()
    for source in recipe.sources:
        if source.kind == "real":
            yield from _real_val(source, root, max_per_type)
        else:
            yield from _synthetic_val(source, max_per_type)


def evaluate(
    model, recipe: BundledRecipe, *, data_root: str | os.PathLike | None = None,
    diameter: str = "gt", max_per_type: int | None = None, size_model_guess: bool = False,
    compare_precision: str | None = None,
) -> list[dict]:  # fmt: skip
    """Segment every validation image; one record per image with its AP at ``THRESHOLDS``.

    Each record holds ``source``, ``type``, ``id``, ``ap`` (one value per threshold),
    ``n_true``, ``n_pred``, ``diameter`` (the one segmented at: the estimate with ``auto``),
    ``annotated_diameter`` (the image's median mask diameter) and ``seconds``.

    Parameters
    ----------
    model : cp2_engine.inference.Model
    recipe : BundledRecipe
    data_root : path, optional
        Datasets folder (default :func:`cp2_engine.recipes._data.default_data_root`).
    diameter : {"gt", "auto"}
        ``gt`` gives each image its annotated median diameter; ``auto`` lets the size model
        estimate it (what ``diameter=None`` gives a user).
    max_per_type : int, optional
        At most this many images per image type.
    size_model_guess : bool
        Also record ``size_model_diameter``, the size model's first guess alone (one more
        network pass per image, outside ``seconds``), to compare with the refined estimate.
    compare_precision : {"bf16", "fp16", "fp32"}, optional
        Also segment each image at the same diameter in this network precision and record
        ``precision_agreement``: the AP (same thresholds) of those masks scored against the
        exact (fp32) masks (outside ``seconds``; the fp32 masks are the ones above when the
        default precision is fp32, else one more pass).

    Examples
    --------
    >>> records = evaluate(Model.load("cp2_nuclei"), recipe)  # doctest: +SKIP
    """
    import torch

    from cp2_engine.metrics import average_precision
    from cp2_engine.network import resolve_precision

    if diameter not in ("gt", "auto"):
        raise ValueError(f"diameter must be 'gt' or 'auto', got {diameter!r}")
    threads = torch.get_num_threads()
    records = []
    for v in validation_images(recipe, data_root=data_root, max_per_type=max_per_type):
        torch.set_num_threads(threads)  # numba's OpenMP post-processing may have changed it
        t0 = time.perf_counter()
        seg = model.segment(v.image, channels=v.channels,
                            diameter=v.diameter if diameter == "gt" else None)  # fmt: skip
        ap = average_precision(v.labels, seg.masks, thresholds=THRESHOLDS)
        records.append({
            "source": v.source, "type": v.kind, "id": v.name,
            "ap": [float(a) for a in ap.ap[0]], "n_true": int(v.labels.max()),
            "n_pred": int(seg.masks.max()), "diameter": float(seg.diameter),
            "annotated_diameter": v.diameter, "seconds": time.perf_counter() - t0,
        })  # fmt: skip
        if size_model_guess and model.size_model is not None:
            style = model.style(v.image, channels=v.channels)
            records[-1]["size_model_diameter"] = float(model.size_model.diameter_from_style(style))
        if compare_precision is not None:
            again = functools.partial(model.segment, v.image, channels=v.channels,
                                      diameter=seg.diameter)  # fmt: skip
            exact = seg if resolve_precision("auto") == "fp32" else again(precision="fp32")
            other = again(precision=compare_precision)
            agree = average_precision(exact.masks, other.masks, thresholds=THRESHOLDS)
            records[-1]["precision_agreement"] = [float(a) for a in agree.ap[0]]
        logger.info("%s %s AP@0.5 %.3f", v.source, v.name[:16], ap.ap[0, 0])
    return records


def summarise(records: Sequence[dict]) -> dict:
    """Mean AP per source, per (source, type) and over all images.

    Examples
    --------
    >>> recs = [{"source": "s", "type": "t", "ap": [1.0, 0.5, 0.0]}]
    >>> summarise(recs)["all"]["ap50"]
    1.0
    """
    groups: dict[str, list] = {"all": []}
    for r in records:
        for key in (r["source"], f"{r['source']}/{r['type']}"):
            groups.setdefault(key, []).append(r["ap"])
        groups["all"].append(r["ap"])
    out = {}
    for key, aps in groups.items():
        mean = np.mean(np.asarray(aps, dtype=np.float64), axis=0) if aps else [np.nan] * 3
        out[key] = {"n": len(aps)} | {
            f"ap{round(100 * t)}": round(float(m), 4) for t, m in zip(THRESHOLDS, mean)
        }
    return out


def diameter_errors(records: Sequence[dict], key: str = "diameter") -> dict:
    """Median ``|log(estimated / annotated)|`` per source, per (source, type) and over all.

    ``key`` names the estimate in each record (``diameter``, or ``size_model_diameter`` for
    the size model's first guess); records without it are skipped.

    Examples
    --------
    >>> recs = [{"source": "s", "type": "t", "diameter": 20.0, "annotated_diameter": 10.0},
    ...         {"source": "s", "type": "t", "diameter": 10.0, "annotated_diameter": 10.0}]
    >>> round(diameter_errors(recs)["s/t"], 3)  # median of log 2 and 0
    0.347
    """
    groups: dict[str, list] = {"all": []}
    for r in records:
        if r.get(key) is None or not r.get("annotated_diameter"):
            continue
        err = abs(float(np.log(r[key] / r["annotated_diameter"])))
        for group in (r["source"], f"{r['source']}/{r['type']}", "all"):
            groups.setdefault(group, []).append(err)
    return {g: round(float(np.median(e)), 4) for g, e in groups.items() if e}


def format_table(summary: dict) -> str:
    """Markdown table of :func:`summarise`'s output.

    Examples
    --------
    >>> print(format_table({"all": {"n": 1, "ap50": 1.0, "ap75": 0.5, "ap90": 0.0}}))
    | group | images | AP@0.5 | AP@0.75 | AP@0.9 |
    |---|---|---|---|---|
    | all | 1 | 1.000 | 0.500 | 0.000 |
    """
    lines = ["| group | images | AP@0.5 | AP@0.75 | AP@0.9 |", "|---|---|---|---|---|"]
    for key, s in sorted(summary.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        lines.append(f"| {key} | {s['n']} | {s['ap50']:.3f} | {s['ap75']:.3f} | {s['ap90']:.3f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- install
@dataclass(frozen=True)
class Installed(TrainEvent):
    """The model was written to ``path``; ``ap`` is its validation summary (diameter given)."""

    path: Path
    ap: dict


@dataclass(frozen=True)
class InstallResult:
    """Files written by :func:`install_recipe` and the validation summaries."""

    weights: Path
    size_model: Path
    sidecar: Path
    validation: dict


def _size_model_images(recipe: BundledRecipe, root: Path) -> tuple[list, list, tuple]:
    """Up to ``max_images`` training images per real source (synthetic ones if none is real)."""
    limit = recipe.size_model.max_images
    images, labels, channels = [], [], None
    for source in recipe.sources:
        if source.kind == "real":
            rows = read_split(source.train_split)
            rows = rows[:: max(1, len(rows) // limit)][:limit]
            for _, image, lab in real_pairs(source, root, rows):
                images.append(image)
                labels.append(lab)
        channels = channels or source.channels
    if not images:
        for source in recipe.sources:
            for _, _, s in synthetic_images(source, seed=source.seed,
                                            n=min(limit, source.n_images)):  # fmt: skip
                images.append(s.image)
                labels.append(s.labels)
    return images, labels, channels


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _data_record(recipe: BundledRecipe) -> list[dict]:
    record = []
    for s in recipe.sources:
        entry = {"name": s.name, "kind": s.kind, "channels": list(s.channels)}
        if s.kind == "real":
            entry |= {"train_split": _display_path(s.train_split),
                      "val_split": _display_path(s.val_split),
                      "n_train": len(read_split(s.train_split))}  # fmt: skip
        else:
            entry |= {"n_images": s.n_images, "seed": s.seed, "styles": list(s.styles),
                      "nucleus": s.nucleus}  # fmt: skip
        record.append(entry)
    return record


def _validate(model, recipe, root, max_per_type) -> tuple[dict, str]:
    validation = {}
    limits = {"gt": max_per_type, "auto": min(max_per_type or AUTO_MAX, AUTO_MAX)}
    for mode, limit in limits.items():
        records = evaluate(model, recipe, data_root=root, diameter=mode, max_per_type=limit)
        validation[f"diameter_{mode}"] = summarise(records)
        logger.info("validation (diameter=%s): %s", mode, validation[f"diameter_{mode}"]["all"])
    note = ("mean AP over validation images; diameter_gt = annotated median diameter given, "
            "diameter_auto = size-model estimate"
            + (f"; gt: at most {max_per_type} images per type" if max_per_type else "")
            + f"; auto: at most {limits['auto']} images per type (CPU time)")  # fmt: skip
    return validation, note


def _training_record(recipe: BundledRecipe, cycles: Sequence, which: str, size_s: float):
    cfg = recipe.train
    n_train = sum(e.get("n_train", e.get("n_images", 0)) for e in _data_record(recipe))
    steps = sum(c.steps for c in cycles)
    return {
        "steps": steps, "batch_size": cfg.batch_size, "bsize": cfg.bsize,
        "epochs_equivalent": round(steps * cfg.batch_size / max(1, n_train), 2),
        "seed": recipe.seed, "exported": which,
        "final_loss_mean50": round(float(np.mean(cycles[-1].losses[-50:])), 4),
        "train_seconds": round(sum(c.seconds for c in cycles)),
        "size_model_seconds": round(size_s), "hardware": cycles[-1].hardware,
        "cycles": [{"steps": c.steps, "seconds": round(c.seconds), "hardware": c.hardware}
                   for c in cycles],
        "initialised_from": cycles[0].init,
    }  # fmt: skip


def install_recipe(
    recipe: BundledRecipe, cycles: Sequence, *, data_root: str | os.PathLike | None = None,
    models_dir: str | os.PathLike, which: str = "ema", max_per_type: int | None = None,
    device: str = "cpu",
) -> InstallResult:  # fmt: skip
    """Install the last cycle's weights (float16) with a size model and a sidecar.

    Parameters
    ----------
    recipe : BundledRecipe
    cycles : sequence of cp2_engine.recipes.CycleResult
        The finished cycles, in order (the last one's checkpoint is exported).
    data_root : path, optional
        Datasets folder for the size-model fit and the validation.
    models_dir : path
        Where ``<name>``, ``<name>_size.npy`` and ``<name>.json`` are written (atomically).
    which : {"ema", "raw"}
        Export the EMA (default) or the raw weights.
    max_per_type : int, optional
        Validate on at most this many images per type.
    device : str
        Device for the size-model fit and the validation.

    Examples
    --------
    >>> res = install_recipe(recipe, result.cycles, models_dir="models")  # doctest: +SKIP
    """
    from cp2_engine.inference import Model
    from cp2_engine.network import resolve_device, save_model, sha256_file
    from cp2_engine.recipes._cycle import exported_net
    from cp2_engine.training import load_checkpoint, train_size_model

    if not cycles:
        raise ValueError("install_recipe needs at least one finished cycle")
    root = Path(data_root) if data_root is not None else default_data_root()
    ckpt = load_checkpoint(Path(cycles[-1].export).parent / "train.ckpt")
    net16 = exported_net(ckpt, recipe, which=which).half()
    net = copy.deepcopy(net16).float().to(resolve_device(device))  # what a user gets
    t0 = time.perf_counter()
    images, labels, channels = _size_model_images(recipe, root)
    sm = recipe.size_model
    size_model = train_size_model(net, images, labels, channels=channels, seed=recipe.seed,
                                  n_epochs=sm.n_epochs, bsize=sm.bsize)  # fmt: skip
    size_s = time.perf_counter() - t0
    model = Model.from_net(net, size_model=size_model, name=recipe.name)
    validation, note = _validate(model, recipe, root, max_per_type)
    meta = {
        "name": recipe.name, "description": recipe.description, "license": recipe.license,
        "channels": list(recipe.channels), "storage": "float16 (upcast to float32 on load)",
        "data": _data_record(recipe), "recipe": _display_path(recipe.path),
        "recipe_sha256": sha256_file(recipe.path),
        "training": _training_record(recipe, cycles, which, size_s),
        "validation": validation, "validation_note": note,
    }  # fmt: skip
    dest = Path(models_dir) / recipe.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    size_path = Path(str(dest) + "_size.npy")
    size_model.save(size_path)
    save_model(net16, dest, metadata=meta)
    for path in (dest, Path(str(dest) + ".json"), size_path):
        path.chmod(0o644)
    logger.info("installed %s (%.1f MB)", dest, dest.stat().st_size / 1e6)
    return InstallResult(dest, size_path, Path(str(dest) + ".json"), validation)
