"""Parity of cp2 inference with the reference cellpose 3.1 (run in its own venv).

1. Network stage: the same random-weights file (written with cp2's ``save_model``) is run by
   ``CellposeModel(pretrained_model=path).eval`` and by ``Model.segment`` on a synthetic image
   large enough for 2x2 tiles, at rescale 1 and 1.5 (image resized). Flows, cellprob and style
   agree to float32 rounding: normalisation, resizing (OpenCV INTER_LINEAR vs torch bilinear
   with half-pixel centres), padding, tiling and sigmoid blending are the same scheme.
2. Masks stage: random weights give noise flows, where both Euler/clustering implementations
   are chaotic and their masks do not agree by design (tiny float differences move pixels to
   other clusters). So masks are compared on the flows a perfect network would output (the
   labels' own flows): both must recover the same cells.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cp2_engine.inference import Model
from cp2_engine.metrics import average_precision
from cp2_engine.network import save_model
from cp2_engine.postprocess import compute_masks, masks_to_flows
from cp2_engine.synthetic import touching_cells

pytestmark = pytest.mark.parity
REPO = Path(__file__).resolve().parents[2]

_REFERENCE = textwrap.dedent(
    """
    import sys, numpy as np
    from cellpose import dynamics, models
    folder = sys.argv[1]
    m = models.CellposeModel(pretrained_model=folder + "/random_model", gpu=False)
    img = np.load(folder + "/img.npy")
    for diameter in (30.0, 20.0):
        masks, flows, styles = m.eval(img, diameter=diameter, channels=[0, 0])
        np.savez(f"{folder}/eval_{diameter:g}.npz", dP=flows[1], cellprob=flows[2], styles=styles)
    d = np.load(folder + "/flows.npz")
    masks = dynamics.compute_masks(d["dP"], d["cellprob"], niter=200, cellprob_threshold=0.0,
                                   flow_threshold=0.4, min_size=15)
    np.save(folder + "/masks.npy", masks)
    """
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Run cellpose once for every test of this module; return (folder, model, inputs)."""
    python = _cellpose_python()
    folder = tmp_path_factory.mktemp("parity")
    model = Model.random(seed=0)
    save_model(model.net, folder / "random_model")
    image = touching_cells((240, 240), diameter=30, seed=2).image  # padded to 256: 2x2 tiles
    np.save(folder / "img.npy", image)
    cells = touching_cells((192, 192), diameter=24, seed=5)
    dp = 5.0 * masks_to_flows(cells.labels)
    cellprob = np.where(cells.labels > 0, 5.0, -5.0).astype(np.float32)
    np.savez(folder / "flows.npz", dP=dp, cellprob=cellprob)
    subprocess.run([python, "-c", _REFERENCE, str(folder)], check=True, capture_output=True)
    return folder, model, image, cells, dp, cellprob


def _cellpose_python() -> str:
    path = os.environ.get("CP2_CELLPOSE_PYTHON", str(REPO / ".venv-cellpose/bin/python"))
    if not Path(path).exists():
        pytest.skip(f"reference cellpose venv not found at {path}")
    return path


@pytest.mark.parametrize("diameter", [30.0, 20.0])
def test_network_outputs_match_cellpose(reference, diameter):
    folder, model, image, *_ = reference
    ref = np.load(folder / f"eval_{diameter:g}.npz")
    seg = model.segment(image, diameter=diameter)
    scale = np.abs(ref["dP"]).max()
    np.testing.assert_allclose(seg.flows, ref["dP"], atol=1e-4 * scale)
    np.testing.assert_allclose(seg.cellprob, ref["cellprob"], atol=1e-4 * scale)
    np.testing.assert_allclose(seg.style, ref["styles"], atol=1e-5)


def test_masks_from_perfect_flows_match_cellpose(reference):
    folder, _, _, cells, dp, cellprob = reference
    ref = np.load(folder / "masks.npy")
    ours = compute_masks(dp, cellprob)
    assert average_precision(ref, ours).ap[0, 0] > 0.95
    assert average_precision(cells.labels, ours).ap[0, 0] > 0.95
    assert average_precision(cells.labels, ref).ap[0, 0] > 0.95
