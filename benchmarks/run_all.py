"""Run every ``benchmarks/bench_*.py`` (``--quick`` unless ``--full``) and print a summary.

Each benchmark runs in its own process with this interpreter; its output is shown as it
runs. The summary lists the exit status, wall time and the benchmark's ``RESULT`` lines (or
its last line). This is ``make bench``.

After the run it writes the same summary as a Markdown page (default ``docs/benchmarks.md``,
replaced atomically) with the date, the machine (CPU model, cores, memory, platform), the git
commit and the command, so that the figures in the docs always say where they come from.

Usage::

    python benchmarks/run_all.py            # quick versions
    python benchmarks/run_all.py --full     # full sizes
    python benchmarks/run_all.py -k net     # only benchmarks whose name contains "net"
    python benchmarks/run_all.py -k metrics,postprocess   # several, comma-separated
    python benchmarks/run_all.py -k metrics --out /tmp/b.md   # write the page elsewhere
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(script: Path, full: bool) -> tuple[int, float, list[str], list[str]]:
    """Run one benchmark; return its exit code, wall time, RESULT lines and last output block."""
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
    return code, time.perf_counter() - t0, results, _last_block(lines)


def _last_block(lines: list[str], limit: int = 12) -> list[str]:
    """The last paragraph of a benchmark's output (its summary table, in most benchmarks)."""
    body = [ln for ln in lines if not ln.startswith("RESULT")]
    while body and not body[-1].strip():
        body.pop()
    start = len(body)
    while start > 0 and body[start - 1].strip():
        start -= 1
    return body[start:][-limit:]


def _machine() -> dict[str, str]:
    """CPU model, core count, memory, platform and GPU (if torch sees one) of this machine."""
    import os
    import platform

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.0f} GB"
                break
    except (OSError, ValueError, IndexError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = "none"
    try:
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import torch; print(torch.cuda.get_device_name(0) "
                "if torch.cuda.is_available() else 'none')",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        gpu = probe.stdout.strip().splitlines()[-1] if probe.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        gpu = "unknown"
    return {
        "cpu": cpu,
        "cores": str(cores),
        "memory": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": gpu,
    }


def _git_commit() -> str:
    """Short hash of HEAD, with ``+changes`` when tracked files differ from it."""
    root = HERE.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" (+ uncommitted changes)" if dirty else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").strip()


def _load_average() -> str:
    """The 1-minute load average (other work on the machine slows every benchmark)."""
    import os

    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        return "unknown"


def _busy_note(load: str, cores: str) -> list[str]:
    """A warning paragraph when the load average exceeded the core count during the run."""
    import re

    values = [float(v) for v in re.findall(r"\d+(?:\.\d+)?", load)]
    if not values or not cores.isdigit() or max(values) <= int(cores):
        return []
    return [
        f"**The machine was busy** (load average up to {max(values):.1f} on {cores} cores): other",
        "jobs shared the cores, so absolute times are inflated and even same-run ratios can be",
        "off by a large factor. Rerun on an idle machine before quoting these figures.",
        "",
    ]


def write_report(
    out: Path, summary, command: str, started: str, machine: dict, load: str = "unknown"
) -> None:
    """Write the summary as Markdown to ``out`` atomically (temporary file + ``os.replace``)."""
    import os
    import tempfile

    lines = [
        "# Benchmarks",
        "",
        "Written by `benchmarks/run_all.py` (`make bench`); rerun it to replace this page. Each",
        "benchmark times cp2 and, where it has one, the reference Cellpose 3.1.1.3 (its own venv,",
        "`.venv-cellpose`) in the same run, so the ratios compare like with like; absolute times",
        "depend on the machine and its load.",
        "",
        f"- date: {started}",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']} memory, "
        f"GPU: {machine['gpu']}",
        f"- platform: {machine['platform']}, Python {machine['python']}",
        f"- load average (1 min): {load}",
        f"- git commit: {_git_commit()}",
        f"- command: `{command}`",
        "",
        *_busy_note(load, machine["cores"]),
        "| benchmark | status | wall time | results |",
        "|---|---|---|---|",
    ]
    for name, code, seconds, results, _tail in summary:
        status = "ok" if code == 0 else f"FAILED ({code})"
        text = "<br>".join(_cell(r.removeprefix("RESULT").strip()) for r in results) or "–"
        lines.append(f"| `{name}` | {status} | {seconds:.1f} s | {text} |")
    lines += [
        "",
        "The results column holds each benchmark's `RESULT` lines (or its last line of output).",
        "The last block of each benchmark's output follows; `run_all.py` prints all of it as it",
        "runs.",
    ]
    for name, _code, _seconds, _results, tail in summary:
        if tail:
            lines += ["", f"### {name}", "", "```", *tail, "```"]
    lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None) -> int:
    import datetime
    import shlex

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full sizes instead of --quick")
    parser.add_argument(
        "-k",
        default="",
        help="only benchmarks whose file name contains this (comma-separated: any of these)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE.parent / "docs" / "benchmarks.md",
        help="Markdown page to write after the run (default: docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)
    wanted = [k.strip() for k in args.k.split(",")] if args.k else [""]
    scripts = sorted(p for p in HERE.glob("bench_*.py") if any(k in p.stem for k in wanted))
    if not scripts:
        print(f"no benchmarks match {args.k!r} in {HERE}")
        return 1
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_before = _load_average()
    summary = [(s.name, *_run(s, args.full)) for s in scripts]
    load = f"{load_before} at the start, {_load_average()} at the end"
    print("\n=== summary")
    for name, code, seconds, results, _tail in summary:
        status = "ok" if code == 0 else f"FAILED ({code})"
        print(f"{name:<28} {status:<12} {seconds:7.1f} s")
        for line in results:
            print(f"    {line}")
    shown = ["python", "benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])]
    write_report(args.out, summary, shlex.join(shown), started, _machine(), load)
    print(f"wrote {args.out}")
    return 0 if all(item[1] == 0 for item in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
