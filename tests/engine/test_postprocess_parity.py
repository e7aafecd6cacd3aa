"""Parity with the reference cellpose 3.1.1.3 (run in its own venv, in a subprocess).

* ``compute_masks`` on the SAME noisy dP / cellprob arrays: cp2's Euler integration reproduces the
  reference's float32 arithmetic, so the masks are expected to be the same partition.
* ``masks_to_flows``: cellpose v3's CPU path (the one its flow-error QC uses on a CPU) and cp2 use
  the same source, step count ``2 * (h + w + 4)`` and no log: the flows agree to round-off,
  except at the source pixel of a symmetric mask, where cellpose normalises a round-off gradient
  into a unit vector and cp2 gives zero.
* ``flow_error``: the per-mask errors of the QC agree, so the same flows keep the same masks.
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
    import torch
    from cellpose import metrics
    for name in ("dP", "dP_rough"):  # the QC's own call (remove_bad_flow_masks, CPU device)
        arr = np.load(folder + f"/{name}.npy")
        err = metrics.flow_error(labels.astype(np.int32), arr, device=torch.device("cpu"))[0]
        np.save(folder + f"/err_{name}.npy", err)
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
    # much rougher flows: many masks' flow errors straddle the QC threshold of 0.4
    dP_rough = (5 * masks_to_flows(labels) + 6.0 * noise).astype(np.float32)
    folder = tmp_path_factory.mktemp("parity")
    arrays = (("dP", dP), ("dP_rough", dP_rough), ("cellprob", cellprob), ("labels", labels))
    for name, arr in arrays:
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


def test_masks_to_flows_matches_cellpose(case, reference):
    labels = case[1]
    ours = masks_to_flows(labels)
    ref = reference[1].astype(np.float32)
    inside = labels > 0
    sources = inside & ~ours.any(0)  # zero flow inside a mask: a symmetric mask's source pixel
    assert sources.sum() <= labels.max()
    np.testing.assert_allclose(ours[:, inside & ~sources], ref[:, inside & ~sources], atol=1e-6)
    assert not ref[:, ~inside].any() and not ours[:, ~inside].any()


@pytest.mark.parametrize("field", ["dP", "dP_rough"])
def test_flow_error_matches_cellpose(case, reference, field):
    """The QC's per-mask errors equal Cellpose's (a 707-px cell once had 0.4 < error < 0.45 in
    cp2 only, because cp2 diffused 4 steps fewer), so both keep the same masks."""
    from cp2_engine.postprocess import flow_error

    folder, labels = case[0], case[1]
    ours = flow_error(labels, np.load(folder / f"{field}.npy"))
    ref = np.load(folder / f"err_{field}.npy")
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert np.array_equal(ours > 0.4, ref > 0.4)
    if field == "dP_rough":  # the check is only telling with masks on both sides of 0.4
        assert (ref > 0.4).any() and (ref <= 0.4).any()
