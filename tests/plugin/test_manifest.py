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


def test_public_names_are_the_manifests_widgets_reader_and_writers():
    """``napari_cp2.__all__`` is exactly the widgets, reader and writers of the manifest, and
    each public name is the object the manifest loads."""
    import napari_cp2

    pm = _manifest()
    by_id = {c.id: c.python_name for c in pm.contributions.commands}
    used = [w.command for w in pm.contributions.widgets]
    used += [r.command for r in pm.contributions.readers]
    used += [w.command for w in pm.contributions.writers]
    targets = {by_id[c] for c in used}
    assert sorted(t.partition(":")[2] for t in targets) == napari_cp2.__all__
    for target in targets:
        module, _, attr = target.partition(":")
        assert getattr(napari_cp2, attr) is getattr(importlib.import_module(module), attr)
