"""Evaluate a bundled model on its validation split and print AP per source and image type.

A thin command line over the recipes package (``evaluate``, ``summarise``,
``format_table``). AP is the Cellpose "average precision" ``TP / (TP + FP + FN)``, averaged over
images. ``--diameter gt`` gives the model each image's annotated median diameter; ``auto`` lets
its size model estimate it (what a user gets with diameter=None).

Usage::

    python benchmarks/eval_bundled.py recipes/cp2_nuclei.toml                # installed model
    python benchmarks/eval_bundled.py recipes/cp2_nuclei.toml --model PATH   # any weights file
    python benchmarks/eval_bundled.py recipes/cp2_cyto.toml --diameter auto --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path


def main(argv=None) -> int:
    """Evaluate the recipe's model (or ``--model``) and print the AP table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--model", help="weights file or name (default: the recipe's name)")
    parser.add_argument("--data", type=Path, help="datasets root (default: the engine's)")
    parser.add_argument("--diameter", choices=("gt", "auto"), default="gt")
    parser.add_argument("--max-per-type", type=int, help="evaluate at most N images per type")
    parser.add_argument("--json", type=Path, help="write the records and summary here")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from cp2_engine.inference import Model
    from cp2_engine.recipes import evaluate, format_table, load_bundled_recipe, summarise

    torch.set_num_threads(args.threads)
    recipe = load_bundled_recipe(args.recipe)
    model = Model.load(args.model or recipe.name, device="cpu")
    t0 = time.perf_counter()
    records = evaluate(model, recipe, data_root=args.data, diameter=args.diameter,
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
