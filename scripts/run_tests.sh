#!/usr/bin/env bash
# Run lint and the whole test suite in the project venv (GUI tests run under Xvfb via pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export CP2_CELLPOSE_PYTHON="${CP2_CELLPOSE_PYTHON:-$PWD/.venv-cellpose/bin/python}"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/npe2" validate napari-cp2 --imports
"$VENV/bin/python" -m pytest -m "not gpu" "$@"
