"""Dropping a malicious ``_seg.npy`` on napari does not run it: the plugin's reader goes through
the engine's restricted unpickler and the open fails with an error that names the file."""

from __future__ import annotations

import os
import shlex

import numpy as np
import pytest

pytest.importorskip("npe2")

pytestmark = pytest.mark.gui


class _Boom:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def test_napari_open_of_a_malicious_seg_npy_runs_nothing(make_napari_viewer, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_seg.npy"
    np.save(path, {"masks": np.ones((8, 8), np.uint16), "img": _Boom(marker)}, allow_pickle=True)
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as info:
        viewer.open(str(path), plugin="napari-cp2")
    assert not marker.exists(), "opening the file ran code"
    text = f"{info.value} {info.value.__cause__}"
    assert "evil_seg.npy" in text and "refused" in text, text
    assert len(viewer.layers) == 0
