"""Evaluate a bundled model on its validation split and print AP per source and image type.

AP is the Cellpose "average precision" ``TP / (TP + FP + FN)`` of
:func:`cp2_engine.metrics.average_precision`, averaged over images. Two diameter modes:
``gt`` gives the model each image's annotated median diameter (from the dataset index);
``auto`` lets the model estimate it with its size model (what a user gets with diameter=None).

Usage::

    python benchmarks/eval_bundled.py recipes/cp2_nuclei.toml                # installed model
    python benchmarks/eval_bundled.py recipes/cp2_nuclei.toml --model PATH   # any weights file
    python benchmarks/eval_bundled.py recipes/cp2_cyto.toml --diameter auto --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import tomllib

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("/work/shared/datasets")
THRESHOLDS = (0.5, 0.75, 0.9)
logger = logging.getLogger("eval_bundled")


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


def _real_images(source: dict, root: Path, max_per_type: int | None) -> Iterator[ValImage]:
    folder = root / source["dataset"] / "train"
    with open(REPO / source["val_split"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["type"]] = counts.get(row["type"], 0) + 1
        if max_per_type is not None and counts[row["type"]] > max_per_type:
            continue
        yield ValImage(
            source["name"], row["type"], row["id"],
            tifffile.imread(folder / f"{row['id']}_img.tif"),
            tifffile.imread(folder / f"{row['id']}_masks.tif"),
            float(row["median_diameter_px"]), tuple(source["channels"]),
        )  # fmt: skip


def _synthetic_images(source: dict, max_per_type: int | None) -> Iterator[ValImage]:
    from cp2_engine.metrics import diameters
    from cp2_engine.synthetic import touching_cells

    rng = np.random.default_rng(source["val_seed"])
    styles = source["styles"]
    n = source["n_val"]
    if max_per_type is not None:  # styles cycle, so this keeps at most max_per_type per style
        n = min(n, max_per_type * len(styles))
    for i in range(n):
        diameter = float(rng.uniform(*source["diameter_range"]))
        style = styles[i % len(styles)]
        s = touching_cells(tuple(source["shape"]), diameter=diameter,
                           seed=int(source["val_seed"]) * 100_000 + i, style=style,
                           nucleus=bool(source["nucleus"]))  # fmt: skip
        yield ValImage(source["name"], style, f"{style}_{i}", s.image, s.labels,
                       float(diameters(s.labels)[0]), tuple(source["channels"]))  # fmt: skip


def validation_images(
    recipe: dict, *, root: Path = DEFAULT_DATA, max_per_type: int | None = None
) -> Iterator[ValImage]:
    """Yield the validation images of every source of a bundled-model recipe.

    Examples
    --------
    >>> recipe = {"sources": []}
    >>> list(validation_images(recipe))
    []
    """
    for source in recipe["sources"]:
        if source["kind"] == "real":
            yield from _real_images(source, root, max_per_type)
        else:
            yield from _synthetic_images(source, max_per_type)


def evaluate(
    model, recipe: dict, *, root: Path = DEFAULT_DATA, diameter: str = "gt",
    max_per_type: int | None = None,
) -> list[dict]:  # fmt: skip
    """Segment every validation image; return one record per image (AP at THRESHOLDS).

    Examples
    --------
    >>> from cp2_engine.model import Model
    >>> evaluate(Model.random(seed=0), {"sources": []})
    []
    """
    from cp2_engine.metrics import average_precision

    if diameter not in ("gt", "auto"):
        raise ValueError(f"diameter must be 'gt' or 'auto', got {diameter!r}")
    records = []
    for v in validation_images(recipe, root=root, max_per_type=max_per_type):
        t0 = time.perf_counter()
        seg = model.segment(v.image, channels=v.channels,
                            diameter=v.diameter if diameter == "gt" else None)  # fmt: skip
        ap = average_precision(v.labels, seg.masks, thresholds=THRESHOLDS)
        records.append({
            "source": v.source, "type": v.kind, "id": v.name,
            "ap": [float(a) for a in ap.ap[0]], "n_true": int(v.labels.max()),
            "n_pred": int(seg.masks.max()), "diameter": float(seg.diameter),
            "seconds": time.perf_counter() - t0,
        })  # fmt: skip
        logger.info("%s %s AP@0.5 %.3f", v.source, v.name[:16], ap.ap[0, 0])
    return records


def summarise(records: list[dict]) -> dict:
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


def format_table(summary: dict) -> str:
    """Markdown table of :func:`summarise`'s output."""
    lines = ["| group | images | AP@0.5 | AP@0.75 | AP@0.9 |", "|---|---|---|---|---|"]
    for key, s in sorted(summary.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        lines.append(f"| {key} | {s['n']} | {s['ap50']:.3f} | {s['ap75']:.3f} | {s['ap90']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--model", help="weights file or name (default: the recipe's name)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--diameter", choices=("gt", "auto"), default="gt")
    parser.add_argument("--max-per-type", type=int, help="evaluate at most N images per type")
    parser.add_argument("--json", type=Path, help="write the records and summary here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from cp2_engine.model import Model

    torch.set_num_threads(2)
    recipe = tomllib.loads(args.recipe.read_text(encoding="utf-8"))
    model = Model.load(args.model or recipe["name"], device="cpu")
    t0 = time.perf_counter()
    records = evaluate(model, recipe, root=args.data, diameter=args.diameter,
                       max_per_type=args.max_per_type)  # fmt: skip
    summary = summarise(records)
    print(f"{model.name} on the validation split, diameter={args.diameter}, "
          f"{len(records)} images in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    print(format_table(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
