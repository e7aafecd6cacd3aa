"""The npe2 manifest: valid, named napari-cp2, and every command's python_name imports."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

npe2 = pytest.importorskip("npe2")

MANIFEST = Path(__file__).resolve().parents[2] / "napari.yaml"


def _manifest():
    return npe2.PluginManifest.from_file(MANIFEST)


def test_manifest_name_and_ids():
    pm = _manifest()
    assert pm.name == "napari-cp2"
    assert pm.contributions.commands
    assert all(c.id.startswith("napari-cp2.") for c in pm.contributions.commands)
    assert (Path(__file__).resolve().parents[2] / "src/napari_cp2/napari.yaml").resolve() == (
        MANIFEST.resolve()
    )


@pytest.mark.parametrize("command", [c.python_name for c in _manifest().contributions.commands])
def test_command_imports(command):
    module, _, attr = command.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
