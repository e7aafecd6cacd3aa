"""Train a bundled model from its recipe (thin wrapper; the engine's ``cp2 train`` does the same).

The work is done by :func:`cp2_engine.recipes.iter_train_recipe`; prefer::

    cp2 train --recipe recipes/cp2_nuclei.toml --out /work/ckpt/cp2_nuclei [--install]

This script keeps the older command line (recipe as a positional argument, ``--export`` and
``--probe-steps``) and logs at INFO level instead of drawing a progress bar::

    python scripts/train_bundled.py recipes/cp2_nuclei.toml --out /work/ckpt/cp2_nuclei --install

Checkpoints and exports live in ``<out>/cycle<k>/``; a finished cycle is skipped, an unfinished
one resumes, and ``--install`` installs the last cycle's weights after training.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from cp2_engine.recipes import TIME_PROBE_STEPS, iter_train_recipe
from cp2_engine.util import drain


def _log_progress(gen):
    """Drain ``gen``, logging each checkpoint and finished cycle; return its result."""
    last: list[float] = []

    def log(event) -> None:
        nonlocal last
        name = type(event).__name__
        if name == "StepEvent":
            last = [*last[-49:], event.loss]
        elif name == "CheckpointSaved":
            logging.info("step %d: mean loss of the last %d steps %.4f", event.epoch, len(last),
                         sum(last) / max(1, len(last)))  # fmt: skip
        elif name in ("DataPrepared", "CycleStarted", "CycleFinished", "Installed"):
            logging.info("%s", event)

    return drain(gen, on_event=log)


def main(argv=None) -> int:
    """Parse the command line and train (resume, install) the recipe's model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for checkpoints/logs")
    parser.add_argument("--data", type=Path, help="datasets root (default: the engine's)")
    parser.add_argument("--steps", type=int, nargs="+", help="override the steps per cycle")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--workers", type=int, default=0, help="batch-making processes")
    parser.add_argument("--time-budget", type=float, help="seconds per cycle: fix its steps")
    parser.add_argument("--probe-steps", type=int, default=TIME_PROBE_STEPS,
                        help="steps timed before --time-budget fixes the steps")  # fmt: skip
    parser.add_argument("--init", type=Path, help="weights that cycle 1 starts from")
    parser.add_argument("--install", action="store_true", help="export into --models-dir")
    parser.add_argument("--export", choices=("ema", "raw"), default="ema")
    parser.add_argument("--models-dir", type=Path, help="install target (default: the package)")
    parser.add_argument("--max-per-type", type=int, help="validate on at most N images per type")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = iter_train_recipe(
            args.recipe, out=args.out, data_root=args.data, device=args.device,
            workers=args.workers, cycles=args.steps, time_budget=args.time_budget,
            probe_steps=args.probe_steps, init=args.init, install=args.install,
            models_dir=args.models_dir, which=args.export, max_per_type=args.max_per_type,
    )  # fmt: skip
    result = _log_progress(gen)
    logging.info("done: %d cycle(s), final weights %s", len(result.cycles), result.export)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
