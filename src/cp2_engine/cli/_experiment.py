"""``cp2 experiment``: the Cellpose 2.0 paper's Fig. 3 (learning-curve) and Fig. 5
(hitl-vs-offline) experiments, resumable, with tables and figures.

Held-out category (the pool and test set from split CSVs of a dataset folder)::

    cp2 experiment hitl-vs-offline --dataset ../shared/datasets/dsb2018 \\
        --pool-split splits/dsb2018_train_tissue.csv --test-split splits/dsb2018_val_tissue.csv \\
        --diameter 17 --pretrained runs/gen_nuclei_no_tissue/cycle1/gen_nuclei_no_tissue \\
        --out runs/exp_tissue --keep-iou 0.75

The same command continues a killed run (``<out>/journal/``); ``--report-only`` writes the
results of the points finished so far without training. ``--strategies``, ``--offline-n``,
``--sizes`` and ``--seeds`` choose what a call trains; the results it writes cover every
finished point of the whole design, so running the parts one at a time never shrinks them.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from cp2_engine.cli._progress import ProgressDisplay
from cp2_engine.util import drain

NAME = "experiment"
HELP = (
    "run a paper experiment (learning-curve = Fig. 3, hitl-vs-offline = Fig. 5) on synthetic "
    "cells, a labelled folder or a dataset's split CSVs; resumable; writes CSV, JSON, PNG"
)
_SETTINGS = {  # argument -> ExperimentSettings field
    "rounds": "n_rounds", "epochs_online": "n_epochs_online",
    "epochs_offline": "n_epochs_offline", "pretrain_epochs": "pretrain_epochs",
    "seeds": "n_seeds", "seeds_large": "n_seeds_large", "bsize": "bsize",
    "batch_size": "batch_size", "device": "device", "keep_iou": "keep_iou",
}  # fmt: skip
#: The options that choose which points of the design a call trains (argument -> field).
_SELECTION = {"strategies": "strategies", "offline_n": "offline_n", "sizes": "subset_sizes",
              "seeds": "n_seeds", "seeds_large": "n_seeds_large"}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 experiment`` arguments to ``parser``."""
    from cp2_engine.hitl import EXPERIMENTS, HITL_STRATEGIES

    parser.add_argument("name", choices=EXPERIMENTS, help="which experiment to run")
    data = parser.add_argument_group("data")
    data.add_argument("--data", default="synthetic",
                      help="'synthetic' (default) or a folder of <name>_img.tif / "
                      "<name>_masks.tif pairs (ignored with --dataset)")  # fmt: skip
    data.add_argument("--dataset", type=Path,
                      help="dataset folder (<dataset>/train/<id>_img.tif); with --pool-split, "
                      "--test-split and --diameter")  # fmt: skip
    data.add_argument("--pool-split", type=Path, help="CSV (id, type, median_diameter_px)")
    data.add_argument("--test-split", type=Path, help="CSV of the held-out test images")
    data.add_argument("--diameter", type=float, help="resize every image to this diameter")
    data.add_argument("--crop", type=int, default=0, help="centre-crop images to this size")
    data.add_argument("--n-train", type=int, help="pool images to use")
    data.add_argument("--n-test", type=int, default=None, help="test images")
    parser.add_argument("--out", type=Path, default=Path("cp2_experiment"), help="output folder")
    parser.add_argument("--pretrained", help="pretrained model (name or file); default: "
                        "pre-train one on synthetic cells (cp2 downloads no weights)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small settings (smoke run)")
    parser.add_argument("--keep-iou", type=float, help="annotator keep threshold (default "
                        "0.75; 0.5 = the lenient annotator)")  # fmt: skip
    parser.add_argument("--strategies", nargs="+", choices=HITL_STRATEGIES)
    parser.add_argument("--rounds", type=int, help="online rounds (hitl-vs-offline)")
    parser.add_argument("--offline-n", type=int, nargs="+", help="offline training-set sizes")
    parser.add_argument("--sizes", type=float, nargs="+", help="learning-curve subset sizes")
    parser.add_argument("--seeds", type=int, help="random subsets per size up to 4 images")
    parser.add_argument("--seeds-large", type=int, help="random subsets per larger size")
    parser.add_argument("--epochs-online", type=int, help="epochs of one online retraining")
    parser.add_argument("--epochs-offline", type=int, help="epochs of one offline training")
    parser.add_argument("--pretrain-epochs", type=int, help="epochs of the synthetic pretraining")
    parser.add_argument("--bsize", type=int, help="training crop size (multiple of 16)")
    parser.add_argument("--batch-size", type=int, help="crops per SGD step")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, mps")
    parser.add_argument("--seed", type=int, default=0, help="seed of order, subsets, training")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard <out>/journal (every finished point) and start again",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write results from the finished points; train nothing",
    )


def _settings(args: argparse.Namespace):
    overrides = {f: getattr(args, a) for a, f in _SETTINGS.items() if getattr(args, a) is not None}
    for arg, field in (("sizes", "subset_sizes"), ("offline_n", "offline_n"),
                       ("strategies", "strategies")):  # fmt: skip
        if getattr(args, arg):
            overrides[field] = tuple(getattr(args, arg))
    overrides["seed"] = args.seed
    return _design(args, **overrides)


def _design(args: argparse.Namespace, **overrides):
    """The default design (``--quick``'s or the paper's) with ``overrides``."""
    from cp2_engine.hitl import ExperimentSettings

    if args.quick:
        return ExperimentSettings.quick(**overrides)
    return dataclasses.replace(ExperimentSettings(), **overrides)


def _data(args: argparse.Namespace, settings):
    from cp2_engine.hitl import folder_data, split_data, synthetic_data

    if args.dataset is not None:
        if not (args.pool_split and args.test_split and args.diameter):
            raise ValueError("--dataset needs --pool-split, --test-split and --diameter")
        return split_data(args.dataset, pool_split=args.pool_split, test_split=args.test_split,
                          diameter=args.diameter, n_pool=args.n_train, n_test=args.n_test,
                          crop=args.crop, seed=args.seed)  # fmt: skip
    n_test = args.n_test if args.n_test is not None else (2 if args.quick else 8)
    if args.data == "synthetic":
        need = max(settings.n_rounds, *settings.offline_n, *settings.subset_sizes)
        n_train = args.n_train or max(int(need), 4 if args.quick else 16)
        shape = (128, 128) if args.quick else (256, 256)
        return synthetic_data(n_train=n_train, n_test=n_test, shape=shape, seed=args.seed)
    folder = Path(args.data)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data must be 'synthetic' or a folder, got {folder}")
    return folder_data(folder, n_train=args.n_train, n_test=n_test, seed=args.seed)


def _follow(gen):
    """Drain an experiment: its result rows are printed, its progress events shown as every
    job's (:class:`ProgressDisplay`); returns the generator's result."""
    from cp2_engine.hitl import Row

    display = ProgressDisplay("experiment")

    def show(event) -> None:
        if not isinstance(event, Row):
            display(event)
            return
        keep = ("strategy", "init", "size", "seed", "step", "n_rois", "drawn", "fixed",
                "human_rois", "ap50", "ap75", "train_seconds")  # fmt: skip
        text = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in event.values.items() if k in keep)  # fmt: skip
        print(f"  {text}", flush=True)

    try:
        return drain(gen, on_event=show)
    finally:
        display.close()


def _report_settings(args: argparse.Namespace, settings):
    """The design the written results cover: the selection of this call (strategies, offline
    sizes, subset sizes, seeds) widened to the full default design, so running one part never
    shrinks the tables and figures that the other parts' finished points fill."""
    full = _design(args)
    return dataclasses.replace(
        settings,
        strategies=full.strategies,
        offline_n=tuple(sorted({*settings.offline_n, *full.offline_n})),
        subset_sizes=tuple(sorted({*settings.subset_sizes, *full.subset_sizes})),
        n_seeds=max(settings.n_seeds, full.n_seeds),
        n_seeds_large=max(settings.n_seeds_large, full.n_seeds_large),
    )


def _command(args: argparse.Namespace, report) -> str:
    """The command line that regenerates these results (without --report-only / --restart);
    its selection is the ``report`` settings' (left out where that is the default)."""
    full, args = _design(args), argparse.Namespace(**vars(args))
    for arg, field in _SELECTION.items():
        value = getattr(report, field)
        setattr(args, arg, None if value == getattr(full, field) else value)
    parts = ["cp2 experiment", args.name]
    for key, value in vars(args).items():
        if key in ("name", "command", "verbose", "report_only", "restart") or key.startswith("_"):
            continue
        if value is True:
            parts.append(f"--{key.replace('_', '-')}")
        elif value not in (None, False, 0) and not (key == "data" and args.dataset):
            text = " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            parts.append(f"--{key.replace('_', '-')} {text}")
    return " ".join(parts)


def _meta(args, settings, data, pretrained, seconds: float) -> dict:
    return {"date": time.strftime("%Y-%m-%d"), "source": data.source,
            "pool": list(data.names()), "test": list(data.test_names),
            "pretrained": str(pretrained), "settings": dataclasses.asdict(settings),
            "command": _command(args, settings),
            "wall_seconds_this_call": round(seconds, 1),
            "title": f"{args.name}: {data.source}; start {Path(str(pretrained)).name}",
            }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run ``cp2 experiment`` and return the exit status."""
    from cp2_engine.hitl import (
        iter_hitl_vs_offline,
        iter_learning_curve,
        pretrain_synthetic,
        write_results,
    )

    t0 = time.perf_counter()
    settings = _settings(args)
    data = _data(args, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    pretrained = args.pretrained
    if pretrained is None:
        print(f"pre-training a stand-in model on synthetic cells ({settings.pretrain_epochs} ep.)")
        pretrained = pretrain_synthetic(args.out / "pretrained_synthetic", settings=settings)
    journal = args.out / "journal"
    if journal.is_dir() and not args.restart:
        print(f"continuing the run recorded in {journal} (--restart starts again)", flush=True)
    kw = {"pretrained": pretrained, "settings": settings, "journal": journal,
          "restart": args.restart, "report_only": args.report_only}  # fmt: skip
    experiment = iter_learning_curve if args.name == "learning-curve" else iter_hitl_vs_offline
    rows = _follow(experiment(data, **kw))
    report = _report_settings(args, settings)
    if report != settings:  # the results cover every finished point, not this call's alone
        kw.update(settings=report, report_only=True, restart=False)  # --restart: done once
        rows = drain(experiment(data, **kw))
    stem = args.name if args.name == "learning-curve" else f"{args.name}_keep{report.keep_iou:g}"
    if not rows:
        print("no finished points yet: nothing to write")
        return 0
    meta = _meta(args, report, data, pretrained, time.perf_counter() - t0)
    for path in write_results(rows, args.out, name=args.name, stem=stem, meta=meta):
        print(f"wrote {path}")
    return 0
