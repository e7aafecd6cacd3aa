"""Run every ``benchmarks/bench_*.py`` (``--quick`` unless ``--full``) and print a summary.

Each benchmark runs in its own process with this interpreter; its output is shown as it
runs. The summary lists the exit status, wall time and the benchmark's ``RESULT`` lines (or
its last line). This is ``make bench``.

Usage::

    python benchmarks/run_all.py            # quick versions
    python benchmarks/run_all.py --full     # full sizes
    python benchmarks/run_all.py -k net     # only benchmarks whose name contains "net"
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(script: Path, full: bool) -> tuple[int, float, list[str]]:
    cmd = [sys.executable, str(script)] + ([] if full else ["--quick"])
    print(f"\n=== {script.name} {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line.rstrip())
    code = proc.wait()
    results = [ln for ln in lines if ln.startswith("RESULT")] or [ln for ln in lines if ln][-1:]
    return code, time.perf_counter() - t0, results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full sizes instead of --quick")
    parser.add_argument("-k", default="", help="only benchmarks whose file name contains this")
    args = parser.parse_args(argv)
    scripts = sorted(p for p in HERE.glob("bench_*.py") if args.k in p.stem)
    if not scripts:
        print(f"no benchmarks match {args.k!r} in {HERE}")
        return 1
    summary = [(s.name, *_run(s, args.full)) for s in scripts]
    print("\n=== summary")
    for name, code, seconds, results in summary:
        status = "ok" if code == 0 else f"FAILED ({code})"
        print(f"{name:<28} {status:<12} {seconds:7.1f} s")
        for line in results:
            print(f"    {line}")
    return 0 if all(code == 0 for _, code, _, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
