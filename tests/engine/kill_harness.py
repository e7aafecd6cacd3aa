"""Helpers of the kill -9 tests: run a job, SIGKILL it after its N-th progress line, fingerprint
folders, find half-written files.

A job is a command line (a list) run with ``python -u``-like unbuffered output; the tests read
its stdout line by line and kill it with SIGKILL when a line matching a pattern has been seen
``count`` times.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JOBS = Path(__file__).resolve().parent / "kill_jobs.py"
TIMEOUT = 300


def env() -> dict:
    """Environment of a job: unbuffered output, 1 torch thread, no GPU."""
    out = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    out["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), out.get("PYTHONPATH", "")])
    return out


def cp2(*args) -> list[str]:
    """The ``cp2`` command line run with this interpreter."""
    return [sys.executable, "-m", "cp2_engine.cli", *map(str, args)]


def job(*args) -> list[str]:
    """A job of ``kill_jobs.py`` (for work without a CLI of its own)."""
    return [sys.executable, str(JOBS), *map(str, args)]


def kill_after(cmd: list[str], pattern: str, count: int, *, cwd=None) -> list[str]:
    """Run ``cmd``; SIGKILL it once ``count`` stdout lines matched ``pattern``; its lines.

    Fails when the job ends (or times out) before that.
    """
    regex = re.compile(pattern)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env(), cwd=cwd)  # fmt: skip
    lines, seen, t0 = [], 0, time.monotonic()
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            seen += bool(regex.search(line))
            if seen >= count:
                os.kill(proc.pid, signal.SIGKILL)
                break
            if time.monotonic() - t0 > TIMEOUT:
                break
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert seen >= count, f"{cmd} ended before {count} lines matching {pattern!r}:\n" + "\n".join(
        lines[-30:]
    )
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    return lines


def run(cmd: list[str], *, cwd=None) -> list[str]:
    """Run ``cmd`` to the end (it must succeed); its output lines."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=cwd,
                          timeout=TIMEOUT)  # fmt: skip
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout.splitlines()


def sha256_tree(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def temp_files(folder: Path) -> list[str]:
    """Files under ``folder`` that look like interrupted atomic writes (``*.tmp``)."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*.tmp"))
