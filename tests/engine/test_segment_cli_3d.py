"""``cp2 segment`` on z-stacks: --do-3d with --anisotropy, and --stitch-threshold."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cp2_engine.cli import main
from cp2_engine.io import load_seg_npy
from cp2_engine.network import bundled_dir
from cp2_engine.synthetic import touching_cells_3d


@pytest.mark.parametrize(
    "extra", [["--do-3d", "--anisotropy", "2"], ["--stitch-threshold", "0.5"]]
)
def test_segment_stack(tmp_path, capsys, extra):
    stack = touching_cells_3d((6, 56, 56), diameter=17, anisotropy=2.0, seed=1)
    tifffile.imwrite(tmp_path / "stack.tif", stack.image)
    model = str(bundled_dir() / "cp2_nuclei")
    args = ["segment", str(tmp_path / "stack.tif"), "--model", model, "--diameter", "17",
            "--device", "cpu", "--out", str(tmp_path / "out"), *extra]  # fmt: skip
    assert main(args) == 0
    masks = tifffile.imread(tmp_path / "out" / "stack_cp_masks.tif")
    assert masks.shape == stack.labels.shape and masks.max() >= 3
    seg = load_seg_npy(tmp_path / "out" / "stack_seg.npy")  # the Cellpose GUI's file
    np.testing.assert_array_equal(seg["masks"], masks)
    assert seg["flows"][4].shape[1:] == masks.shape and seg["outlines"].shape == masks.shape
    assert "stack.tif:" in capsys.readouterr().out


def test_both_modes_is_a_clear_error(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "s.tif", touching_cells_3d((4, 32, 32), seed=0).image)
    args = ["segment", str(tmp_path / "s.tif"), "--model", str(bundled_dir() / "cp2_nuclei"),
            "--do-3d", "--stitch-threshold", "0.5", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 2
    assert "not both" in capsys.readouterr().err
