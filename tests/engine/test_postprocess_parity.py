"""Parity with the reference cellpose 3.1.1.3 (run in its own venv, in a subprocess).

* ``compute_masks`` on the SAME noisy dP / cellprob arrays: cp2's Euler integration reproduces the
  reference's float32 arithmetic, so the masks are expected to be the same partition.
* ``masks_to_flows``: cellpose v3's CPU path uses the centroid and no log like cp2, but runs
  ``2 * (h + w + 4)`` diffusion steps where cp2 runs ``2 * (h + w + 2)``, and it gives the source
  pixel of a symmetric mask a round-off direction. The flows agree closely, not exactly.
"""

from __future__ import annotations

import subprocess
import textwrap

import numpy as np
import pytest
from scipy import ndimage as ndi

from cp2_engine.postprocess import compute_masks, masks_to_flows
from cp2_engine.synthetic import touching_cells

pytestmark = pytest.mark.parity

_SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    from cellpose import dynamics
    folder = sys.argv[1]
    dP = np.load(folder + "/dP.npy")
    cellprob = np.load(folder + "/cellprob.npy")
    labels = np.load(folder + "/labels.npy")
    masks = dynamics.compute_masks(dP, cellprob, niter=200, cellprob_threshold=0.0,
                                   flow_threshold=0.4, min_size=15)
    np.save(folder + "/masks_ref.npy", masks)
    np.save(folder + "/flows_ref.npy", dynamics.masks_to_flows(labels.astype(np.int32)))
    """
)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    rng = np.random.default_rng(7)
    labels = touching_cells((192, 192), diameter=26, seed=4).labels
    noise = ndi.gaussian_filter(rng.normal(0, 2.0, size=(2, 192, 192)), (0, 1.5, 1.5))
    dP = (5 * masks_to_flows(labels) + noise).astype(np.float32)
    cellprob = (np.where(labels > 0, 4.0, -4.0) + rng.normal(0, 2.0, labels.shape)).astype(
        np.float32
    )
    folder = tmp_path_factory.mktemp("parity")
    for name, arr in (("dP", dP), ("cellprob", cellprob), ("labels", labels)):
        np.save(folder / f"{name}.npy", arr)
    return folder, labels, dP, cellprob


@pytest.fixture
def reference(case, cellpose_python):
    folder = case[0]
    if not (folder / "masks_ref.npy").exists():  # run the reference once per module
        subprocess.run([cellpose_python, "-c", _SCRIPT, str(folder)], check=True, timeout=600)
    return np.load(folder / "masks_ref.npy"), np.load(folder / "flows_ref.npy")


def test_compute_masks_matches_cellpose(case, reference):
    _, _, dP, cellprob = case
    ours = compute_masks(dP, cellprob)
    ref = reference[0]
    assert ref.max() > 20, "the reference should find the cells"
    assert _same_partition(ours, ref)


def test_masks_to_flows_close_to_cellpose(case, reference):
    labels = case[1]
    ours = masks_to_flows(labels)
    ref = reference[1].astype(np.float32)
    inside = labels > 0
    cos = (ours * ref).sum(0)[inside]
    assert np.mean(cos) > 0.999
    assert np.mean(cos > 0.99) > 0.99
    assert not ref[:, ~inside].any() and not ours[:, ~inside].any()
