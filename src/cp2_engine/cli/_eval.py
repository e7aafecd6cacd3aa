"""``cp2 eval``: score predicted label images against ground truth (AP, TP/FP/FN per image).

Files are paired by base name: ground truth ``<name>_masks.{tif,png}`` / ``<name>_seg.npy``
(or ``<id>_masks.tif`` beside ``<id>_img.tif``) with predictions ``<name>_cp_masks.*``,
``<name>_masks.*`` or ``<name>_seg.npy``. When both folders are the same, ground truth is read
from ``_masks``/``_seg.npy`` and predictions from ``_cp_masks``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

NAME = "eval"
HELP = "average precision of predicted masks against ground-truth masks, per image and mean"

#: IoU thresholds of the AP-vs-IoU curve.
CURVE_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 eval`` arguments to ``parser``."""
    parser.add_argument("--true", required=True, type=Path, help="folder of ground-truth labels")
    parser.add_argument("--pred", required=True, type=Path, help="folder of predicted labels")
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.5, 0.75, 0.9],
        help="IoU thresholds of the table (default: 0.5 0.75 0.9)",
    )
    parser.add_argument("--plot", type=Path, help="write the AP-vs-IoU curve (0.5..0.95) as PNG")
    parser.add_argument("--json", type=Path, help="write all numbers as JSON")


def pair_label_files(true_dir: Path, pred_dir: Path) -> list[tuple[str, Path, Path]]:
    """``(name, true_file, pred_file)`` for every ground-truth file, sorted by name.

    Raises
    ------
    FileNotFoundError
        If a folder is missing.
    ValueError
        If a folder holds no label files or a file has no partner in the other folder.
    """
    from cp2_engine import io

    same = true_dir.resolve() == pred_dir.resolve() if true_dir.exists() else False
    trues = io.find_label_files(true_dir, kinds=("_masks", "_seg") if same else io.LABEL_SUFFIXES)
    preds = io.find_label_files(pred_dir, kinds=("_cp_masks",) if same else io.LABEL_SUFFIXES)
    for folder, found in ((true_dir, trues), (pred_dir, preds)):
        if not found:
            raise ValueError(
                f"no label files in {folder} (expected <name>_masks.tif/.png, "
                "<name>_cp_masks.tif/.png or <name>_seg.npy)"
            )
    for a, b, kind in ((trues, preds, "prediction"), (preds, trues, "ground truth")):
        lonely = sorted(set(a) - set(b))
        if lonely:
            listed = ", ".join(a[name].name for name in lonely[:5])
            raise ValueError(f"no {kind} for {len(lonely)} file(s): {listed}")
    return [(name, trues[name], preds[name]) for name in sorted(trues)]


def _load_pairs(pairs) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from cp2_engine import io

    trues, preds = [], []
    for name, true_file, pred_file in pairs:
        true, pred = io.read_labels(true_file), io.read_labels(pred_file)
        if true.shape != pred.shape:
            raise ValueError(
                f"{name}: ground truth {true_file.name} has shape {true.shape} but "
                f"prediction {pred_file.name} has {pred.shape}"
            )
        trues.append(true)
        preds.append(pred)
    return trues, preds


def _format_table(names, result, columns) -> str:
    ths = result.thresholds[columns]
    head = ["image".ljust(24)] + [f"AP@{t:.2f}" for t in ths] + [f"TP/FP/FN@{t:.2f}" for t in ths]
    lines = ["  ".join(head)]
    for i, name in enumerate(names):
        counts = [f"{result.tp[i, c]}/{result.fp[i, c]}/{result.fn[i, c]}" for c in columns]
        row = [name[:24].ljust(24)] + [f"{result.ap[i, c]:7.3f}" for c in columns]
        lines.append("  ".join(row + [f"{s:>14}" for s in counts]))
    totals = [
        f"{result.tp[:, c].sum()}/{result.fp[:, c].sum()}/{result.fn[:, c].sum()}" for c in columns
    ]
    mean = [f"mean ({len(names)} images)".ljust(24)] + [
        f"{result.mean_ap[c]:7.3f}" for c in columns
    ]
    lines.append("  ".join(mean + [f"{s:>14}" for s in totals]))
    return "\n".join(lines)


def _report(names, pairs, result, columns, curve) -> dict:
    def per_threshold(arr, i):
        return [arr[i, c].item() for c in columns]

    return {
        "thresholds": [float(t) for t in result.thresholds[columns]],
        "mean_ap": [float(result.mean_ap[c]) for c in columns],
        "images": [
            {
                "name": name,
                "true": str(true_file),
                "pred": str(pred_file),
                "ap": per_threshold(result.ap, i),
                "tp": per_threshold(result.tp, i),
                "fp": per_threshold(result.fp, i),
                "fn": per_threshold(result.fn, i),
            }
            for i, (name, true_file, pred_file) in enumerate(pairs)
        ],
        "curve": {
            "thresholds": [float(t) for t in result.thresholds[curve]],
            "mean_ap": [float(result.mean_ap[c]) for c in curve],
        },
    }


def run(args: argparse.Namespace) -> int:
    """Score the prediction folder against the ground-truth folder; print a table."""
    from cp2_engine.metrics import average_precision
    from cp2_engine.util import atomic_write
    from cp2_engine.viz import plot_ap_curve

    pairs = pair_label_files(args.true, args.pred)
    trues, preds = _load_pairs(pairs)
    wanted = [round(float(t), 6) for t in args.thresholds]
    all_ths = sorted(set(wanted) | set(CURVE_THRESHOLDS))
    result = average_precision(trues, preds, thresholds=all_ths)
    columns = [all_ths.index(t) for t in wanted]
    curve = [all_ths.index(t) for t in CURVE_THRESHOLDS]
    names = [name for name, _, _ in pairs]
    print(_format_table(names, result, columns))
    if args.plot:
        curve_result = type(result)(
            thresholds=result.thresholds[curve],
            ap=result.ap[:, curve],
            tp=result.tp[:, curve],
            fp=result.fp[:, curve],
            fn=result.fn[:, curve],
        )
        plot_ap_curve(args.plot, curve_result, title=f"{args.pred.name} vs {args.true.name}")
        print(f"wrote {args.plot}")
    if args.json:
        report = _report(names, pairs, result, columns, curve)
        with atomic_write(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0
