#!/usr/bin/env bash
# Create or reuse the project venv and install what the given mode needs.
#   main : engine + pinned CPU torch (for `make demo`)
#   test : + napari/Qt extra, dev tools, BioImage.IO export extra, headless-Qt Debian packages,
#          and the reference cellpose 3.1.1.3 in its own venv (.venv-cellpose) for parity tests
#          and benchmarks.
set -euo pipefail
mode="${1:-main}"
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PIP_FLAGS=(-q --disable-pip-version-check)

# pip warns once per package about this machine's local index folders; keep the log readable.
pip_install() { "$1/bin/pip" install "${PIP_FLAGS[@]}" "${@:2}" 2>&1 | { grep -v "is ignored: it is neither" || true; }; }

stamp_ok() { [ -f "$VENV/.cp2-$1" ] && [ "$VENV/.cp2-$1" -nt pyproject.toml ] && [ "$VENV/.cp2-$1" -nt scripts/setup.sh ]; }

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! stamp_ok "$mode"; then
    pip_install "$VENV" torch==2.13.0
    if [ "$mode" = "test" ]; then
        pip_install "$VENV" -c scripts/constraints.txt -e ".[napari,dev,export]"
    else
        pip_install "$VENV" -c scripts/constraints.txt -e .
    fi
    touch "$VENV/.cp2-$mode"
fi

if [ "$mode" = "test" ]; then
    if ! command -v Xvfb >/dev/null 2>&1 || ! ldconfig -p | grep -q libxcb-icccm; then
        echo "setup: installing Debian packages for headless Qt" >&2
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libxkbcommon-x11-0 \
            libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
            libxcb-randr0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libdbus-1-3 libfontconfig1 >/dev/null
    fi
    CPV=.venv-cellpose
    if [ ! -f "$CPV/.cp2-ok3" ]; then
        python3 -m venv "$CPV"
        # lazy-loader, openvino, onnx: benchmarks import cp2's network code (and its runtime)
        # from src/ inside this venv
        if pip_install "$CPV" torch==2.13.0 "cellpose==3.1.1.3" "lazy-loader>=0.4" openvino onnx; then
            touch "$CPV/.cp2-ok3"
        else
            echo "setup: could not install cellpose 3.1.1.3; parity tests will skip" >&2
        fi
    fi
fi
