"""``cp2 experiment``: run the Cellpose 2.0 paper's experiments and write tables and plots."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from cp2_engine.util import drain

NAME = "experiment"
HELP = (
    "run a paper experiment (learning-curve, hitl-vs-offline) on a labelled folder or synthetic "
    "cells; writes CSV, JSON and PNG"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 experiment`` arguments to ``parser``."""
    from cp2_engine.hitl import EXPERIMENTS

    parser.add_argument("name", choices=EXPERIMENTS, help="which experiment to run")
    parser.add_argument(
        "--data",
        default="synthetic",
        help="'synthetic' (default) or a folder of <name>_img.tif / <name>_masks.tif pairs",
    )
    parser.add_argument("--out", type=Path, default=Path("cp2_experiment"), help="output folder")
    parser.add_argument(
        "--pretrained",
        help="pretrained model (name or file); default: pre-train one on synthetic cells of "
        "another style (cp2 downloads no weights)",
    )
    parser.add_argument("--quick", action="store_true", help="small settings for 2 CPU cores")
    parser.add_argument("--rounds", type=int, help="images annotated (hitl-vs-offline)")
    parser.add_argument("--epochs-online", type=int, help="epochs of one online retraining")
    parser.add_argument("--epochs-offline", type=int, help="epochs of one offline training")
    parser.add_argument("--pretrain-epochs", type=int, help="epochs of the synthetic pretraining")
    parser.add_argument("--seeds", type=int, help="random subsets per size (learning-curve)")
    parser.add_argument(
        "--sizes", type=float, nargs="+", help="subset sizes in images (learning-curve)"
    )
    parser.add_argument("--bsize", type=int, help="training crop size (multiple of 16)")
    parser.add_argument("--n-train", type=int, help="training images to use")
    parser.add_argument("--n-test", type=int, default=None, help="test images")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, mps")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, subsets and training")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard the finished rows of an interrupted run in --out and start again (by "
        "default the same command continues an interrupted run: <out>/<name>.journal/)",
    )


def _settings(args: argparse.Namespace):
    from cp2_engine.hitl import ExperimentSettings

    overrides = {
        "n_rounds": args.rounds,
        "n_epochs_online": args.epochs_online,
        "n_epochs_offline": args.epochs_offline,
        "pretrain_epochs": args.pretrain_epochs,
        "n_seeds": args.seeds,
        "subset_sizes": tuple(args.sizes) if args.sizes else None,
        "bsize": args.bsize,
        "device": args.device,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides["seed"] = args.seed
    if args.quick:
        return ExperimentSettings.quick(**overrides)
    return dataclasses.replace(ExperimentSettings(), **overrides)


def _data(args: argparse.Namespace, settings):
    from cp2_engine.hitl import folder_data, synthetic_data

    n_test = args.n_test if args.n_test is not None else (2 if args.quick else 8)
    if args.data == "synthetic":
        n_train = args.n_train or max(settings.n_rounds, 4 if args.quick else 16)
        shape = (128, 128) if args.quick else (256, 256)
        return synthetic_data(n_train=n_train, n_test=n_test, shape=shape, seed=args.seed)
    folder = Path(args.data)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data must be 'synthetic' or a folder, got {folder}")
    return folder_data(folder, n_train=args.n_train, n_test=n_test, seed=args.seed)


def _print_event(event) -> None:
    from cp2_engine.hitl import Progress, Row
    from cp2_engine.training import TrainStarted

    if isinstance(event, Progress):
        print(f"[{event.done}/{event.total}] {event.message}", flush=True)
    elif isinstance(event, Row):
        text = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in event.values.items())  # fmt: skip
        print(f"  {text}", flush=True)
    elif isinstance(event, TrainStarted):
        print(f"  training {event.n_images} images for {event.n_epochs} epochs", flush=True)


def _new_workdir(out: Path) -> Path:
    """A fresh folder for this run's HITL projects (earlier runs are never touched; a resumed
    run keeps the folder its journal records)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = out / "projects" / stamp, 1
    while path.exists():
        path, k = out / "projects" / f"{stamp}-{k}", k + 1
    return path


def run(args: argparse.Namespace) -> int:
    """Run ``cp2 experiment`` and return the exit status."""
    from cp2_engine.hitl import (
        iter_hitl_vs_offline,
        iter_learning_curve,
        pretrain_synthetic,
        write_results,
    )

    settings = _settings(args)
    data = _data(args, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    pretrained = args.pretrained
    if pretrained is None:
        print(f"pre-training a stand-in model on synthetic cells ({settings.pretrain_epochs} ep.)")
        pretrained = pretrain_synthetic(args.out / "pretrained_synthetic", settings=settings)
    journal = args.out / f"{args.name}.journal"
    if journal.is_dir() and not args.restart:
        print(f"continuing the run recorded in {journal} (--restart starts again)", flush=True)
    resume = {"journal": journal, "restart": args.restart}
    if args.name == "learning-curve":
        gen = iter_learning_curve(data, pretrained=pretrained, settings=settings, **resume)
    else:
        gen = iter_hitl_vs_offline(data, pretrained=pretrained, settings=settings,
                                   workdir=_new_workdir(args.out), **resume)  # fmt: skip
    rows = drain(gen, on_event=_print_event)
    for path in write_results(rows, args.out, name=args.name):
        print(f"wrote {path}")
    return 0
