"""Split the shared DSB2018 and Usiigaci train folders into train / validation id lists.

The split is stratified by the ``type`` column of each dataset's ``index.csv`` and seeded, so it
is reproducible: every type sends ``round(fraction * n)`` images (at least one) to validation.
Images that ``sample_data/`` was cut from are always put in validation, so that the bundled
models are tested on images they never saw.

Writes ``splits/<dataset>_train.csv`` and ``splits/<dataset>_val.csv`` (columns id, type,
median_diameter_px), atomically.

Usage::

    python scripts/prepare_splits.py [--data /work/shared/datasets] [--seed 0] [--fraction 0.15]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("/work/shared/datasets")
DATASETS = ("dsb2018", "usiigaci")
# source images of sample_data/ (see sample_data/README.md): always validation
FORCED_VALIDATION = {
    "dsb2018": {
        "00071198d059ba7f5914a526d124d28e6d010c92466da21d4a04cd5413362552",
        "00ae65c1c6631ae6f2be1a449902976e6eb8483bf6b0740d00530220832c6d3e",
    },
    "usiigaci": {"usiigaci_set13"},
}
COLUMNS = ("id", "type", "median_diameter_px")


def read_index(folder: Path) -> list[dict]:
    """Rows of ``<folder>/index.csv`` as dicts."""
    path = folder / "index.csv"
    if not path.is_file():
        raise FileNotFoundError(f"expected a dataset index at {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def stratified_split(
    rows: list[dict], *, fraction: float, seed: int, forced: set[str]
) -> tuple[list[dict], list[dict]]:
    """Split rows per ``type``; forced ids count towards their type's validation quota."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for kind in sorted({r["type"] for r in rows}):
        group = sorted((r for r in rows if r["type"] == kind), key=lambda r: r["id"])
        n_val = max(1, round(fraction * len(group)))
        chosen = {r["id"] for r in group if r["id"] in forced}
        rest = [r["id"] for r in group if r["id"] not in chosen]
        extra = max(0, n_val - len(chosen))
        chosen |= {rest[i] for i in rng.permutation(len(rest))[:extra]}
        for r in group:
            (val if r["id"] in chosen else train).append(r)
    return train, val


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` (columns ``COLUMNS``) atomically."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "splits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.15)
    args = parser.parse_args(argv)
    if not 0 < args.fraction < 1:
        raise ValueError(f"--fraction must lie in (0, 1), got {args.fraction}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in DATASETS:
        rows = read_index(args.data / name / "train")
        train, val = stratified_split(
            rows, fraction=args.fraction, seed=args.seed, forced=FORCED_VALIDATION[name]
        )
        write_csv(args.out / f"{name}_train.csv", train)
        write_csv(args.out / f"{name}_val.csv", val)
        print(f"{name}: {len(train)} train, {len(val)} validation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
