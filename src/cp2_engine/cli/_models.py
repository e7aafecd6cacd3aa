"""``cp2 models``: list the models cp2 can find, or show and check one of them."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

NAME = "models"
HELP = "list available models (bundled, Cellpose cache) or show/check one; never downloads"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 models`` arguments to ``parser``."""
    parser.add_argument("model", nargs="?", help="model name or weights file to show")
    parser.add_argument(
        "--check",
        action="store_true",
        help="load the weights strictly and verify the sha256 recorded in the sidecar",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _spec_dict(spec) -> dict:
    record = asdict(spec)
    record["paths"] = [str(p) for p in spec.paths]
    record["size_model"] = str(spec.size_model) if spec.size_model else None
    return record


def _check(spec) -> dict:
    from cp2_engine.network import (
        infer_architecture,
        load_state_dict,
        read_metadata,
        verify_sha256,
    )

    state = load_state_dict(spec.paths[0])
    arch = infer_architecture(state)
    return {
        "nbase": list(arch["nbase"]),
        "nout": arch["nout"],
        "diam_mean_in_file": float(state["diam_mean"].item()),
        "diam_labels_in_file": float(state["diam_labels"].item()),
        "sha256_verified": verify_sha256(spec.paths[0]),
        "metadata": read_metadata(spec.paths[0]),
    }


def _print_table(specs: list) -> None:
    if not specs:
        from cp2_engine.network import search_dirs

        print("no models found; searched: " + ", ".join(str(d) for _, d in search_dirs()))
        return
    width = max(len(s.name) for s in specs)
    for spec in specs:
        size = "size-model" if spec.size_model else "-"
        note = f"  [{spec.license}]" if spec.license else ""
        print(f"{spec.name:<{width}}  {spec.source:<14}  {size:<10}  {spec.description}{note}")


def run(args: argparse.Namespace) -> int:
    """Run ``cp2 models`` and return the exit status."""
    from cp2_engine.network import find_model, list_models

    if args.model is None:
        specs = list_models()
        if args.json:
            print(json.dumps([_spec_dict(s) for s in specs], indent=2))
        else:
            _print_table(specs)
        return 0
    spec = find_model(args.model)
    record = _spec_dict(spec)
    if args.check:
        record["check"] = _check(spec)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        for key, value in record.items():
            print(f"{key}: {value}")
    return 0
