"""Parity of cp2's z-stack segmentation with the reference Cellpose 3.1.1.3 (its own venv).

* Flows: the same weights file run by ``CellposeModel.eval(do_3D=True)`` and ``Model.segment(
  do_3d=True)`` give the same combined 3-D flows and cell probability to float32 rounding, for
  random weights with ``anisotropy=2`` (Z resized) and for the bundled trained ``cp2_nuclei``.
* Masks: with ``cp2_nuclei`` on a synthetic stack, cp2's 3-D masks match Cellpose's (AP@0.5 >=
  0.98), and so do the stitched masks (``stitch_threshold=0.5``). Cellpose integrates 3-D flows
  with ``grid_sample`` (half-voxel offset) and cp2 with trilinear sampling at the position, so
  partitions agree as objects, not voxel for voxel.
* The 3-D dynamics alone, on the same noisy flows: the same objects.
* ``_seg.npy`` of a stack: a file written by Cellpose's ``masks_flows_to_seg`` opens in cp2 (with
  the restricted unpickler), and cp2's file has the same keys, shapes and dtypes.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from cp2_engine.inference import Model
from cp2_engine.io import load_seg_npy, save_seg_npy
from cp2_engine.metrics import average_precision
from cp2_engine.network import bundled_dir, save_model
from cp2_engine.postprocess import compute_masks_3d
from cp2_engine.postprocess._flows3d import masks_to_flows_3d
from cp2_engine.synthetic import touching_cells_3d

pytestmark = pytest.mark.parity
REPO = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    from cellpose import dynamics, models
    folder, nuclei = sys.argv[1], sys.argv[2]
    rnd = models.CellposeModel(pretrained_model=folder + "/random_model", gpu=False)
    small = np.load(folder + "/small.npy")
    _, flows, _ = rnd.eval(small, diameter=30.0, channels=[0, 0], z_axis=0, do_3D=True,
                           anisotropy=2.0)
    np.savez(folder + "/random.npz", dP=flows[1], cellprob=flows[2])
    m = models.CellposeModel(pretrained_model=nuclei, gpu=False)
    stack = np.load(folder + "/stack.npy")
    masks, flows, _ = m.eval(stack, diameter=17.0, channels=[0, 0], z_axis=0, do_3D=True)
    np.savez(folder + "/nuclei3d.npz", masks=masks, dP=flows[1], cellprob=flows[2])
    from cellpose import io as cio
    cio.masks_flows_to_seg(stack, masks, flows, folder + "/cp_stack.tif", diams=17.0,
                           channels=[0, 0])
    masks, flows, _ = m.eval(stack, diameter=17.0, channels=[0, 0], z_axis=0,
                             stitch_threshold=0.5)
    np.savez(folder + "/stitch.npz", masks=masks, dP=flows[1], cellprob=flows[2])
    d = np.load(folder + "/noisy.npz")
    masks = dynamics.resize_and_compute_masks(d["dP"], d["cellprob"], niter=200, do_3D=True,
                                              cellprob_threshold=0.0, min_size=15)
    np.save(folder + "/dyn.npy", masks)
    """
)


@pytest.fixture(scope="module")
def case(tmp_path_factory, cellpose_python_module):
    folder = tmp_path_factory.mktemp("parity3d")
    random_model = Model.random(seed=0)
    save_model(random_model.net, folder / "random_model")
    small = touching_cells_3d((8, 48, 48), diameter=24, seed=1).image
    stack = touching_cells_3d((12, 72, 72), diameter=17, seed=0)
    np.save(folder / "small.npy", small)
    np.save(folder / "stack.npy", stack.image)
    rng = np.random.default_rng(3)
    cells = touching_cells_3d((16, 64, 64), diameter=16, seed=5).labels
    noise = ndi.gaussian_filter(rng.normal(0, 1.5, size=(3, *cells.shape)), (0, 1, 1, 1))
    dP = (5 * masks_to_flows_3d(cells) + noise).astype(np.float32)
    cellprob = np.where(cells > 0, 4.0, -4.0).astype(np.float32)
    np.savez(folder / "noisy.npz", dP=dP, cellprob=cellprob)
    nuclei = str(bundled_dir() / "cp2_nuclei")
    subprocess.run(
        [cellpose_python_module, "-c", _SCRIPT, str(folder), nuclei], check=True, timeout=1200
    )
    return folder, random_model, small, stack, cells, dP, cellprob


@pytest.fixture(scope="module")
def cellpose_python_module():
    path = os.environ.get("CP2_CELLPOSE_PYTHON", str(REPO / ".venv-cellpose/bin/python"))
    if not Path(path).exists():
        pytest.skip(f"reference cellpose venv not found at {path}")
    return path


@pytest.fixture(scope="module")
def nuclei():
    return Model.load("cp2_nuclei", device="cpu")


def _close(ours, ref):
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours, ref, atol=1e-4 * scale)


def test_random_weights_3d_flows_match(case):
    folder, model, small, *_ = case
    ref = np.load(folder / "random.npz")
    seg = model.segment(small, diameter=30.0, do_3d=True, anisotropy=2.0)
    _close(seg.flows, ref["dP"])
    _close(seg.cellprob, ref["cellprob"])


def test_trained_3d_flows_and_masks_match(case, nuclei):
    folder, _, _, stack, *_ = case
    ref = np.load(folder / "nuclei3d.npz")
    seg = nuclei.segment(stack.image, diameter=17.0, do_3d=True)
    _close(seg.flows, ref["dP"])
    _close(seg.cellprob, ref["cellprob"])
    assert ref["masks"].max() >= 10, "the reference should find the cells"
    assert average_precision(ref["masks"], seg.masks, thresholds=(0.5,)).ap[0, 0] >= 0.98


def test_stitched_masks_match(case, nuclei):
    folder, _, _, stack, *_ = case
    ref = np.load(folder / "stitch.npz")
    seg = nuclei.segment(stack.image, diameter=17.0, stitch_threshold=0.5)
    _close(seg.flows, ref["dP"])
    assert ref["masks"].max() >= 10
    assert average_precision(ref["masks"], seg.masks, thresholds=(0.5,)).ap[0, 0] >= 0.98


def test_3d_dynamics_on_the_same_flows(case):
    folder, *_, cells, dP, cellprob = case
    ref = np.load(folder / "dyn.npy")
    ours = compute_masks_3d(dP, cellprob)
    assert average_precision(ref, ours, thresholds=(0.5,)).ap[0, 0] >= 0.98
    assert average_precision(cells, ours, thresholds=(0.5,)).ap[0, 0] >= 0.95


def test_stack_seg_npy_has_the_layout_cellpose_writes(case, nuclei, tmp_path):
    folder, _, _, stack, *_ = case
    ref = load_seg_npy(folder / "cp_stack_seg.npy")  # a Cellpose 3-D file opens safely
    seg = nuclei.segment(stack.image, diameter=17.0, do_3d=True)
    path = save_seg_npy(
        tmp_path / "stack.tif",
        image=stack.image,
        masks=seg.masks,
        flows=seg.flows,
        cellprob=seg.cellprob,
        diameter=17.0,
    )
    ours = load_seg_npy(path)
    assert set(ref) - set(ours) <= {"restore", "ratio", "normalize_params"}
    for key in ("masks", "outlines"):
        assert ours[key].shape == ref[key].shape, key
    assert ours["img"].shape == stack.image.shape  # Cellpose leaves the stack out; cp2 keeps it
    assert ours["masks"].dtype == ref["masks"].dtype
    assert len(ours["flows"]) == len(ref["flows"])
    for k, (a, b) in enumerate(zip(ours["flows"], ref["flows"])):
        if isinstance(b, np.ndarray) and b.size:
            assert (a.shape, a.dtype) == (b.shape, b.dtype), f"flows[{k}]"
    np.testing.assert_array_equal(ours["flows"][4][:3], seg.flows)
    assert ((ours["outlines"] > 0) <= (ours["masks"] > 0)).all()
    assert ours["outlines"][ours["masks"] > 0].any() and ours["outlines"].shape[0] == 12
