"""Tests of the demo pipeline and the ``cp2 demo`` command (quick mode)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cp2_engine.cli import main
from cp2_engine.demo import NO_MODEL_NOTE, find_samples, iter_demo, overlay_rgb
from cp2_engine.synthetic import touching_cells


def test_demo_command_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "does not use the bundled trained models yet" in printed
    assert "AP@0.5" in printed
    pngs = sorted(out.glob("*_roundtrip_overlay.png"))
    assert len(pngs) == 2
    summary = (out / "demo_summary.md").read_text()
    assert NO_MODEL_NOTE in summary and "random weights" in summary


def test_iter_demo_round_trip_on_synthetic_samples(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    cells = touching_cells((96, 96), diameter=20, seed=4)
    tifffile.imwrite(samples / "cells.tif", cells.image)
    tifffile.imwrite(samples / "cells_masks.tif", cells.labels)
    tifffile.imwrite(samples / "unlabelled.tif", cells.image)
    gen = iter_demo(tmp_path / "out", sample_dir=samples, quick=True, time_network=False)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert [e.step for e in events] == [1, 2] and events[-1].total == 2
    (image,) = result.images
    assert image.name == "cells" and image.n_true == cells.labels.max()
    assert image.ap[0] > 0.95
    assert image.overlay.is_file() and result.forward_seconds == 0.0


def test_find_samples_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        find_samples(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="pairs"):
        find_samples(tmp_path)


def test_overlay_marks_outlines(rng):
    labels = np.zeros((30, 30), np.uint16)
    labels[5:15, 5:15] = 1
    rgb = overlay_rgb(rng.random((30, 30)), labels, labels)
    assert rgb.shape == (30, 30, 3) and rgb.dtype == np.uint8
    assert (rgb[5, 5:15] == (0, 255, 0)).all()  # inner outline of the true mask
    assert (rgb[4, 6:14] == (255, 0, 255)).all()  # outer outline of the predicted mask
