"""``cp2 train``: train or fine-tune a model on a folder of labelled images, or retrain a bundled
model from its recipe.

Folder training: settings are layered: :class:`cp2_engine.training.TrainConfig` defaults, then a
TOML recipe (``--recipe``), then the flags given on the command line.

Bundled-model recipes (TOML with ``[[sources]]``, e.g. ``recipes/cp2_nuclei.toml``) are detected
and run by :func:`cp2_engine.recipes.iter_train_recipe`::

    cp2 train --recipe recipes/cp2_nuclei.toml --out DIR [--data ROOT] [--device cuda]
              [--workers N] [--install]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from cp2_engine.cli._progress import ProgressDisplay

NAME = "train"
HELP = "train or fine-tune a segmentation model on labelled images (_masks.tif / _seg.npy)"

logger = logging.getLogger(__name__)

# command-line flag -> TrainConfig field
_FLAG_FIELDS = {
    "mode": "mode",
    "epochs": "n_epochs",
    "lr": "learning_rate",
    "weight_decay": "weight_decay",
    "batch_size": "batch_size",
    "seed": "seed",
    "min_train_masks": "min_train_masks",
    "bsize": "bsize",
    "save_every": "save_every",
    "device": "device",
    "channels": "channels",
    "precision": "precision",
    "channels_last": "channels_last",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 train`` arguments to ``parser``."""
    parser.add_argument("--images", type=Path, help="folder of training images with labels")
    parser.add_argument("--test", type=Path, help="folder of held-out images with labels")
    parser.add_argument(
        "--pretrained", help="starting model name or file, or 'scratch' (default: scratch)"
    )
    parser.add_argument("--mode", choices=("online", "offline"), help="default online")
    parser.add_argument("--epochs", type=int, help="default 100 online / 300 offline")
    parser.add_argument("--lr", type=float, help="default 0.1 fine-tuning / 0.2 scratch")
    parser.add_argument("--weight-decay", type=float, help="default 1e-4")
    parser.add_argument("--batch-size", type=int, help="default 8")
    parser.add_argument("--seed", type=int, help="default 0")
    parser.add_argument("--min-train-masks", type=int, help="skip images with fewer ROIs (5)")
    parser.add_argument("--bsize", type=int, help="training crop size (224)")
    parser.add_argument("--save-every", type=int, help="checkpoint every N epochs (10)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="autocast precision (default auto: bf16 on CPUs with AVX-512 BF16 / AMX and on "
        "bf16-capable GPUs, fp16 on older GPUs, fp32 elsewhere)",
    )
    parser.add_argument(  # deprecated spelling of --precision bf16 / fp32
        "--bf16", action=argparse.BooleanOptionalAction, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--channels-last", action="store_const", const=True, help="channels-last memory format"
    )
    parser.add_argument("--channels", type=int, nargs=2, metavar=("CHAN", "CHAN2"))
    parser.add_argument("--mask-filter", default="_masks", help="label file suffix (_masks)")
    parser.add_argument("--out", type=Path, help="output folder (default: the images folder)")
    parser.add_argument("--name", help="model file name (default cp2_<date>_<time>)")
    parser.add_argument("--resume", type=Path, help="continue from this .ckpt file")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="train from epoch 0 even when --name has an interrupted checkpoint (by default the "
        "same command continues it)",
    )
    parser.add_argument("--recipe", type=Path, help="TOML recipe (see recipes/README.md)")
    parser.add_argument("--size-model", action="store_true", help="also fit a size model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_argument_group("bundled-model recipes (TOML with [[sources]])")
    group.add_argument("--data", type=Path, help="datasets root (default $CP2_DATASETS or "
                       "../shared/datasets beside the repository)")  # fmt: skip
    group.add_argument("--workers", type=int, help="batch-making processes (default 0)")
    group.add_argument("--steps", type=int, nargs="+", help="override the steps of each cycle")
    group.add_argument("--time-budget", type=float, help="seconds per cycle: fix its steps")
    group.add_argument("--init", type=Path, help="weights that cycle 1 starts from")
    group.add_argument("--threads", type=int, help="torch CPU threads")
    group.add_argument(
        "--install",
        action="store_true",
        help="export float16 weights + size model + sidecar into --models-dir",
    )
    group.add_argument("--models-dir", type=Path, help="install target (default: the package)")
    group.add_argument("--max-per-type", type=int, help="validate on at most N images per type")


def load_recipe(path: Path) -> tuple[dict, dict]:
    """Read a TOML recipe into ``(TrainConfig overrides, command options)``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.toml"
    >>> _ = p.write_text('pretrained = "scratch"\\n[train]\\nn_epochs = 5\\n')
    >>> load_recipe(p)
    ({'n_epochs': 5}, {'pretrained': 'scratch'})
    """
    from cp2_engine.recipes import read_recipe_toml
    from cp2_engine.training import TrainConfig

    data = read_recipe_toml(path)
    train_table = data.pop("train", {})
    fields = {f.name for f in dataclasses.fields(TrainConfig)} | {"bf16", "amp"}  # old keys
    unknown = sorted(set(train_table) - fields)
    if unknown:
        raise ValueError(
            f"recipe {path}: unknown [train] keys {unknown}; expected {sorted(fields)}"
        )
    allowed = {"pretrained", "images", "test", "out", "name", "mask_filter", "size_model"}
    extra = sorted(set(data) - allowed)
    if extra:
        raise ValueError(
            f"recipe {path}: unknown top-level keys {extra}; expected {sorted(allowed)}"
        )
    return dict(train_table), data


def _build_config(args: argparse.Namespace, recipe_cfg: dict):
    from cp2_engine.training import TrainConfig

    overrides = dict(recipe_cfg)
    if getattr(args, "bf16", None) is not None and args.precision is None:
        args.precision = "bf16" if args.bf16 else "fp32"
        logger.warning("--bf16/--no-bf16 are deprecated: use --precision %s", args.precision)
    for flag, field in _FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[field] = tuple(value) if field == "channels" else value
    if "channels" in overrides:
        overrides["channels"] = tuple(overrides["channels"])
    return TrainConfig.from_dict(overrides)


def _option(args, recipe_opts: dict, name: str, default=None):
    value = getattr(args, name, None)
    return value if value not in (None, False) else recipe_opts.get(name, default)


_FOLDER_ONLY = ("images", "test", "pretrained", "mode", "epochs", "lr", "weight_decay",
                "batch_size", "seed", "min_train_masks", "bsize", "save_every", "channels",
                "name", "resume", "restart", "size_model", "bf16", "precision",
                "channels_last")  # fmt: skip
_BUNDLED_ONLY = ("data", "workers", "steps", "time_budget", "init", "threads", "install",
                 "models_dir", "max_per_type")  # fmt: skip


def _given(args: argparse.Namespace, names) -> list[str]:
    given = [n for n in names if getattr(args, n, None) not in (None, False)]
    return ["--" + n.replace("_", "-") for n in given]


def _run_bundled(args: argparse.Namespace) -> int:
    from cp2_engine.recipes import iter_train_recipe

    extra = _given(args, _FOLDER_ONLY)
    if extra:
        raise ValueError(f"{args.recipe} is a bundled-model recipe; {extra} apply only to "
                         "folder training")  # fmt: skip
    if args.out is None:
        raise ValueError("--out DIR (the training folder) is required with a bundled recipe")
    gen = iter_train_recipe(
        args.recipe, out=args.out, data_root=args.data, device=args.device or "auto",
        workers=args.workers or 0, cycles=args.steps, time_budget=args.time_budget,
        init=args.init, threads=args.threads, install=args.install, models_dir=args.models_dir,
        max_per_type=args.max_per_type,
    )  # fmt: skip
    result = ProgressDisplay("training", disable=args.no_progress).follow(gen)
    print(f"trained {len(result.cycles)} cycle(s); final weights {result.export}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``cp2 train`` and return the exit status."""
    from cp2_engine.recipes import is_bundled_recipe

    if args.recipe is not None and is_bundled_recipe(args.recipe):
        return _run_bundled(args)
    extra = _given(args, _BUNDLED_ONLY)
    if extra:
        raise ValueError(f"{extra} apply only to bundled-model recipes (TOML with [[sources]])")
    return _run_folder(args)


def _run_folder(args: argparse.Namespace) -> int:
    from cp2_engine.training import checkpoint_path, iter_train, load_folder, train_size_model

    recipe_cfg, opts = load_recipe(args.recipe) if args.recipe else ({}, {})
    config = _build_config(args, recipe_cfg)
    images_dir = _option(args, opts, "images")
    if images_dir is None:
        raise ValueError("--images DIR is required (or 'images' in the recipe)")
    mask_filter = _option(args, opts, "mask_filter", "_masks")
    data = load_folder(Path(images_dir), mask_filter=mask_filter)
    test_dir = _option(args, opts, "test")
    test = load_folder(Path(test_dir), mask_filter=mask_filter) if test_dir else None
    pretrained = _option(args, opts, "pretrained", "scratch")
    out = Path(_option(args, opts, "out", images_dir)) / "models"
    name = _option(args, opts, "name", time.strftime("cp2_%Y%m%d_%H%M%S"))
    save_path = Path(str(args.resume).removesuffix(".ckpt")) if args.resume else out / name
    save_path.parent.mkdir(parents=True, exist_ok=True)
    resume = args.resume
    if resume is None and not args.restart and checkpoint_path(save_path).is_file():
        resume = checkpoint_path(save_path)  # the same command after a crash: continue
    gen = iter_train(
        pretrained, data.images, data.labels, config=config, save_path=save_path,
        resume_from=resume, test_images=test.images if test else None,
        test_labels=test.labels if test else None,
    )  # fmt: skip
    result = ProgressDisplay("training", disable=args.no_progress).follow(gen)
    if _option(args, opts, "size_model", False):
        train_size_model(
            result.net, data.images, data.labels, model_path=save_path, channels=config.channels,
            bsize=config.bsize, seed=config.seed,
        )  # fmt: skip
    print(f"model saved to {result.model_path} (final loss {result.losses[-1]:.4f})")
    return 0
