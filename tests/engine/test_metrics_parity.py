"""Parity with the reference Cellpose 3.1.1.3 (run in its own venv, one subprocess per module)."""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest
from skimage.segmentation import expand_labels, relabel_sequential

from cp2_engine import io
from cp2_engine.metrics import average_precision
from cp2_engine.synthetic import touching_cells

THRESHOLDS = (0.3, *np.round(np.arange(0.5, 1.0, 0.05), 2))

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from cellpose import io, metrics

    work = sys.argv[1]
    data = np.load(f"{work}/pairs.npz")
    n = len([k for k in data.files if k.startswith("true")])
    trues = [data[f"true{i}"] for i in range(n)]
    preds = [data[f"pred{i}"] for i in range(n)]
    ap, tp, fp, fn = metrics.average_precision(trues, preds, threshold=list(data["ths"]))
    np.savez(f"{work}/reference.npz", ap=ap, tp=tp, fp=fp, fn=fn,
             seg_masks=io.imread(f"{work}/cells_seg.npy"))
    keys = sorted(np.load(f"{work}/cells_seg.npy", allow_pickle=True).item().keys())
    json.dump(keys, open(f"{work}/keys.json", "w"))
    """
)

_CACHE: dict = {}


def _prediction(true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction: shifted, grown or shrunk, some cells missed, a few extras."""
    pred = np.roll(true, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
    pred = expand_labels(pred, int(rng.integers(0, 3)))
    ids = np.unique(pred)[1:]
    pred[np.isin(pred, rng.choice(ids, size=len(ids) // 6, replace=False))] = 0
    extra = np.roll(true, (40, 17), axis=(0, 1))
    spare = (pred == 0) & (extra > 0) & (rng.random() < 0.5)
    pred[spare] = extra[spare] + pred.max()
    return relabel_sequential(pred)[0].astype(np.int32)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("parity")
    rng = np.random.default_rng(7)
    arrays = {"ths": np.array(THRESHOLDS)}
    for i in range(6):
        true = touching_cells((128, 128), n_cells=18, diameter=22, seed=i).labels.astype(np.int32)
        arrays[f"true{i}"] = true
        arrays[f"pred{i}"] = _prediction(true, rng)
    arrays["pred5"] = np.zeros_like(arrays["pred5"])  # an empty prediction
    np.savez(work / "pairs.npz", **arrays)
    io.save_seg_npy(
        work / "cells.tif",
        image=rng.random((128, 128)).astype(np.float32),
        masks=arrays["true0"],
        flows=rng.normal(size=(2, 128, 128)).astype(np.float32),
        cellprob=rng.normal(size=(128, 128)).astype(np.float32),
    )
    return work, arrays


@pytest.fixture
def reference(cellpose_python, workdir):
    work, _ = workdir
    if work not in _CACHE:
        subprocess.run(
            [cellpose_python, "-c", _SCRIPT, str(work)],
            check=True,
            capture_output=True,
            timeout=600,
        )
        ref = dict(np.load(work / "reference.npz"))
        ref["keys"] = json.loads((work / "keys.json").read_text())
        _CACHE[work] = ref
    return _CACHE[work]


@pytest.mark.parity
def test_average_precision_matches_cellpose(reference, workdir):
    _, arrays = workdir
    trues = [arrays[f"true{i}"] for i in range(6)]
    preds = [arrays[f"pred{i}"] for i in range(6)]
    ours = average_precision(trues, preds, thresholds=THRESHOLDS)
    assert ours.tp[:5].min() < ours.tp[:5].max()  # the cases are not trivial
    np.testing.assert_array_equal(ours.tp, reference["tp"])
    np.testing.assert_array_equal(ours.fp, reference["fp"])
    np.testing.assert_array_equal(ours.fn, reference["fn"])
    np.testing.assert_allclose(ours.ap, reference["ap"], rtol=1e-6)


@pytest.mark.parity
def test_gapped_labels_match_cellpose_on_renumbered_labels(reference, workdir):
    _, arrays = workdir
    true, pred = arrays["true1"], arrays["pred1"]
    ours = average_precision(true * 5 + 11 * (true > 0), pred * 3, thresholds=THRESHOLDS)
    np.testing.assert_array_equal(ours.tp[0], reference["tp"][1])


@pytest.mark.parity
def test_cellpose_reads_our_seg_npy(reference, workdir):
    _, arrays = workdir
    np.testing.assert_array_equal(reference["seg_masks"], arrays["true0"])
    expected = {"outlines", "colors", "masks", "chan_choose", "filename", "flows", "ismanual"}
    assert expected <= set(reference["keys"])
