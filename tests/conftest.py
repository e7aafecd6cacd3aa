"""Shared fixtures: seeded RNGs, small synthetic images, and the headless-GUI guard."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _display_available() -> bool:
    return bool(os.environ.get("DISPLAY")) or shutil.which("Xvfb") is not None


def pytest_collection_modifyitems(config, items):
    if _display_available():
        return
    skip = pytest.mark.skip(reason="no DISPLAY and no Xvfb on PATH: GUI tests need a display")
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    """A local, seeded random generator (never the global numpy RNG)."""
    return np.random.default_rng(12345)


@pytest.fixture
def artifacts_dir(tmp_path) -> Path:
    """Where a test writes screenshots and measurements: ``$CP2_TEST_ARTIFACTS`` when set (to
    keep them), else a folder under ``tmp_path``; never the repository unless asked."""
    keep = os.environ.get("CP2_TEST_ARTIFACTS")
    path = Path(keep) if keep else tmp_path / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def cellpose_python() -> str:
    """Path of the Python that has the reference cellpose installed, or skip with the reason."""
    path = os.environ.get("CP2_CELLPOSE_PYTHON", str(REPO_ROOT / ".venv-cellpose/bin/python"))
    if not Path(path).exists():
        pytest.skip(f"reference cellpose venv not found at {path} (run `make test` to create it)")
    return path
