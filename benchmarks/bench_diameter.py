"""``diameter=None`` against a given diameter: time ratio and AP per image type, both models.

For every validation image of the bundled models (``splits/*_val.csv`` via the recipes), in one
run: segment at the annotated diameter (each image's median mask diameter) and with
``diameter=None`` (the size-model estimate), one after the other, and record both times and the
AP at 0.5 / 0.75 / 0.9. Prints per model and image type the median time ratio
(estimated / given), the total time ratio, and both mean APs; ``--json`` writes every record.

The network runs on whatever ``CP2_BACKEND`` / ``CP2_PRECISION`` say (default: the fast path);
set ``CP2_BACKEND=torch CP2_PRECISION=fp32`` to time the estimate alone on the exact path.

usage: python benchmarks/bench_diameter.py [--quick | --max-per-type N] [--threads T] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, max_per_type: int | None, data_root) -> list[dict]:
    from cp2_engine.inference import Model
    from cp2_engine.metrics import average_precision, diameters
    from cp2_engine.recipes import load_bundled_recipe
    from cp2_engine.recipes._install import validation_images

    model = Model.load(name, device="cpu")
    recipe = load_bundled_recipe(ROOT / "recipes" / f"{name}.toml")
    records = []
    for v in validation_images(recipe, data_root=data_root, max_per_type=max_per_type):
        d_true = v.diameter or diameters(v.labels)[0]
        model.segment(v.image[:64, :64], channels=v.channels, diameter=d_true)  # warm
        t0 = time.perf_counter()
        given = model.segment(v.image, channels=v.channels, diameter=d_true)
        t1 = time.perf_counter()
        est = model.segment(v.image, channels=v.channels)
        t2 = time.perf_counter()
        ap = average_precision([v.labels] * 2, [given.masks, est.masks]).ap
        records.append({
            "model": name, "source": v.source, "type": v.kind, "id": v.name,
            "shape": list(v.image.shape), "annotated_diameter": round(d_true, 2),
            "estimated_diameter": round(est.diameter, 2),
            "seconds_given": round(t1 - t0, 3), "seconds_estimated": round(t2 - t1, 3),
            "ap_given": [round(float(a), 4) for a in ap[0]],
            "ap_estimated": [round(float(a), 4) for a in ap[1]],
        })  # fmt: skip
        print(f"{name} {v.kind} {v.name}: ratio {records[-1]['seconds_estimated'] / records[-1]['seconds_given']:.2f}"  # noqa: E501
              f"  AP@0.5 {ap[0][0]:.3f} -> {ap[1][0]:.3f}", flush=True)  # fmt: skip
    return records


def summary(records: list[dict]) -> str:
    groups = defaultdict(list)
    for r in records:
        groups[(r["model"], f"{r['source']} {r['type']}")].append(r)
        groups[(r["model"], "all")].append(r)
    lines = [
        "| model | images | n | time ratio est/given (median, total) | AP@0.5 given -> est |"
        " AP@0.75 given -> est | AP@0.9 given -> est |",
        "|---|---|---|---|---|---|---|",
    ]
    for (model, group), rs in sorted(groups.items()):
        ratio = statistics.median(r["seconds_estimated"] / r["seconds_given"] for r in rs)
        total = sum(r["seconds_estimated"] for r in rs) / sum(r["seconds_given"] for r in rs)
        aps = [
            f"{statistics.mean(r['ap_given'][k] for r in rs):.3f} -> "
            f"{statistics.mean(r['ap_estimated'][k] for r in rs):.3f}"
            for k in range(3)
        ]
        lines.append(f"| `{model}` | {group} | {len(rs)} | {ratio:.2f}x, {total:.2f}x | "
                     + " | ".join(aps) + " |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cp2_nuclei", "cp2_cyto"])
    parser.add_argument("--max-per-type", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="datasets root")
    parser.add_argument("--json", type=Path, help="write every record here")
    parser.add_argument("--quick", action="store_true", help="at most 2 images per type")
    args = parser.parse_args(argv)
    if args.quick and args.max_per_type is None:
        args.max_per_type = 2
    import torch

    torch.set_num_threads(args.threads)
    records = []
    for name in args.models:
        records += run(name, args.max_per_type, args.data)
    print(summary(records))
    print("RESULT diameter=None time ratio (all images): "
          f"{sum(r['seconds_estimated'] for r in records) / sum(r['seconds_given'] for r in records):.2f}x")  # fmt: skip # noqa: E501
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
