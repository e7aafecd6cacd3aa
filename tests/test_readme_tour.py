"""The README's five-minute tour, run as a user runs it: every `cp2` command of its command-line
block (outputs redirected to a temporary folder) and its Python example."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TOUR = README[README.index("## Five-minute tour") :]
TOUR = TOUR[: TOUR.index("\n## ", 4)]

pytestmark = pytest.mark.slow


def _block(lang: str) -> str:
    match = re.search(rf"```{lang}\n(.*?)```", TOUR, re.S)
    assert match, f"the tour has a {lang} block"
    return match.group(1)


def _commands(tmp: Path) -> list[list[str]]:
    out = []
    for line in _block("bash").splitlines():
        line = line.split("#")[0].strip()
        if not line.startswith("cp2 "):
            continue
        line = re.sub(r"/tmp/", f"{tmp}/", line)
        out.append([sys.executable, "-m", "cp2_engine.cli", *shlex.split(line)[1:]])
    return out


def test_readme_command_line_tour(tmp_path):
    commands = _commands(tmp_path)
    assert len(commands) >= 5
    for cmd in commands:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
        )
        assert proc.returncode == 0, f"{shlex.join(cmd[3:])}\n{proc.stdout}\n{proc.stderr}"
    assert list((tmp_path / "cp2_tour").glob("*_cp_masks.tif"))


def test_readme_python_example():
    code = _block("python")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "nuclei at" in proc.stdout and "AP@0.5/0.75/0.9" in proc.stdout
