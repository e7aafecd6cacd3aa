"""Tests of ``cp2 segment``: outputs, overwrite protection and errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cp2_engine.cli import main
from cp2_engine.inference import Model
from cp2_engine.io import load_seg_npy
from cp2_engine.network import save_model
from cp2_engine.synthetic import touching_cells


@pytest.fixture
def setup(tmp_path):
    model_path = tmp_path / "random_model"
    save_model(Model.random(seed=0).net, model_path)
    images = tmp_path / "images"
    images.mkdir()
    for seed in (1, 2):
        cells = touching_cells((72, 72), diameter=20, seed=seed)
        tifffile.imwrite(images / f"img{seed}.tif", cells.image)
    return model_path, images, tmp_path / "out"


def _args(model_path, target, out, *extra):
    return ["segment", str(target), "--model", str(model_path), "--diameter", "30",
            "--out", str(out), *extra]  # fmt: skip


def test_segment_writes_all_outputs(setup, capsys):
    model_path, images, out = setup
    # random weights find cells only with a low cellprob threshold and no flow check
    extra = ("--save-png", "--save-rois", "--cellprob-threshold", "-2", "--flow-threshold", "0")
    assert main(_args(model_path, images, out, *extra)) == 0
    for stem in ("img1", "img2"):
        masks = tifffile.imread(out / f"{stem}_cp_masks.tif")
        assert masks.shape == (72, 72) and masks.max() > 0
        for suffix in ("_cp_masks.png", "_rois.zip", "_cp_overlay.png", "_seg.npy"):
            assert (out / f"{stem}{suffix}").is_file(), suffix
        seg = load_seg_npy(out / f"{stem}_seg.npy")
        np.testing.assert_array_equal(seg["masks"], masks)
    assert "img2.tif" in capsys.readouterr().out


def test_never_overwrites_without_flag(setup, capsys):
    model_path, images, out = setup
    target = images / "img1.tif"
    assert main(_args(model_path, target, out, "--no-npy")) == 0
    assert not (out / "img1_seg.npy").exists()
    masks_file = out / "img1_cp_masks.tif"
    masks_file.write_bytes(b"user annotation")
    assert main(_args(model_path, target, out)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert masks_file.read_bytes() == b"user annotation"
    assert not (out / "img1_seg.npy").exists()  # nothing was written for the refused run
    assert main(_args(model_path, target, out, "--overwrite")) == 0
    assert tifffile.imread(masks_file).shape == (72, 72)


def test_missing_inputs_are_clear_errors(setup, capsys):
    model_path, images, out = setup
    assert main(_args(model_path, images / "nope.tif", out)) == 2
    assert "image not found" in capsys.readouterr().err
    assert main(_args(images / "no_model", images, out)) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_precision_and_backend_options_give_the_same_masks(setup, monkeypatch, backend):
    from cp2_engine.network import openvino_available

    if backend == "openvino" and not openvino_available():
        pytest.skip("openvino not installed")
    model_path, images, out = setup
    extra = ("--cellprob-threshold", "-2", "--flow-threshold", "0", "--no-npy")
    target = images / "img1.tif"
    assert main(_args(model_path, target, out / "ref", *extra, "--precision", "fp32",
                      "--backend", "torch")) == 0  # fmt: skip
    args = _args(model_path, target, out / backend, *extra, "--precision", "fp32",
                 "--backend", backend)  # fmt: skip
    if backend == "openvino":  # in a child: OpenVINO never loads into the suite's process
        import subprocess
        import sys

        code = "import sys; from cp2_engine.cli import main; sys.exit(main(sys.argv[1:]))"
        subprocess.run([sys.executable, "-c", code, *args], check=True, timeout=600)
    else:
        assert main(args) == 0
    ref = tifffile.imread(out / "ref" / "img1_cp_masks.tif")
    assert ref.max() > 0
    np.testing.assert_array_equal(tifffile.imread(out / backend / "img1_cp_masks.tif"), ref)


def test_unknown_precision_is_refused(setup, capsys):
    model_path, images, out = setup
    with pytest.raises(SystemExit):
        main(_args(model_path, images, out, "--precision", "half"))
    assert "fp32" in capsys.readouterr().err
