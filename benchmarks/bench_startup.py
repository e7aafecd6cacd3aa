"""Network runtime start-up: what the first segmentation of a process costs, cold and warm cache.

Each line is a fresh process that loads ``cp2_cyto`` and segments the 256 x 256 synthetic
phase sample twice (diameter given): the first call pays the runtime start-up (torch: none;
OpenVINO: ONNX export and conversion unless the disk cache has the model, then compile), the
second shows the steady state. Runs: torch fp32; the default path with an empty cache
(``CP2_CACHE_DIR`` a new folder); the default path again with that cache filled.

usage: python benchmarks/bench_startup.py [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import tifffile, torch
from cp2_engine.inference import Model
torch.set_num_threads(int(sys.argv[1]))
image = tifffile.imread(sys.argv[2])
model = Model.load("cp2_cyto", device="cpu")
t1 = time.perf_counter()
first = model.segment(image, diameter=23.0, precision=sys.argv[3], backend=sys.argv[4])
t2 = time.perf_counter()
model.segment(image, diameter=23.0, precision=sys.argv[3], backend=sys.argv[4])
t3 = time.perf_counter()
runner = model.runner(first.config)
print(json.dumps({"import_load": t1 - t0, "first": t2 - t1, "second": t3 - t2,
                  "backend": runner.backend, "precision": runner.precision}))
"""


def _child(threads: int, precision: str, backend: str, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CP2_BACKEND", "CP2_PRECISION")}
    env["CP2_CACHE_DIR"] = str(cache)
    image = ROOT / "sample_data" / "synthetic_phase_cells.tif"
    cmd = [sys.executable, "-c", _CHILD, str(threads), str(image), precision, backend]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="(the same run; for run_all)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        runs = {
            "torch fp32": _child(args.threads, "fp32", "torch", cache),
            "default, empty cache": _child(args.threads, "auto", "auto", cache),
            "default, warm cache": _child(args.threads, "auto", "auto", cache),
        }
    print(f"{'process':<22} {'runtime':<16} {'import+load s':>13} {'1st segment s':>14} "
          f"{'2nd segment s':>14}")  # fmt: skip
    for name, r in runs.items():
        print(f"{name:<22} {r['backend'] + ' ' + r['precision']:<16} {r['import_load']:>13.2f} "
              f"{r['first']:>14.2f} {r['second']:>14.2f}")  # fmt: skip
    cold, warm = runs["default, empty cache"], runs["default, warm cache"]
    print(f"RESULT runtime start-up (1st - 2nd segment): empty cache "
          f"{cold['first'] - cold['second']:.1f} s, warm cache "
          f"{warm['first'] - warm['second']:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
