"""Evaluate widget: exact AP/TP/FP/FN on a hand-made case, FP/FN layers, and the truth folder."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _case():
    truth = np.zeros((40, 40), np.uint16)
    truth[2:10, 2:10] = 1  # matched exactly
    truth[20:30, 20:30] = 2  # missed -> FN
    pred = np.zeros((40, 40), np.uint16)
    pred[2:10, 2:10] = 7
    pred[30:38, 2:10] = 9  # spurious -> FP
    return truth, pred


def test_ap_table_and_fp_fn_layers(make_napari_viewer, tmp_path):
    import tifffile

    from napari_cp2._evaluate_widget import EvaluateWidget

    truth, pred = _case()
    viewer = make_napari_viewer()
    widget = EvaluateWidget(viewer)
    viewer.add_labels(truth, name="gt")
    viewer.add_labels(pred, name="pred")
    widget.reset_choices()
    widget._pred.value = viewer.layers["pred"]
    widget._truth.value = viewer.layers["gt"]
    widget._thresholds.value = "0.5, 0.9"
    res = widget.evaluate()
    np.testing.assert_allclose(res["ap"], [1 / 3, 1 / 3])
    assert list(res["tp"]) == [1, 1] and list(res["fp"]) == [1, 1] and list(res["fn"]) == [1, 1]
    fp = viewer.layers["pred_FP"].data
    fn = viewer.layers["pred_FN"].data
    assert (fp > 0).sum() == 64 and fp[34, 5] > 0
    assert (fn > 0).sum() == 100 and fn[25, 25] > 0

    tifffile.imwrite(tmp_path / "pred_masks.tif", truth)  # truth from a folder, by layer name
    widget._truth.value = None
    widget._folder.value = tmp_path
    res = widget.evaluate()
    np.testing.assert_allclose(res["ap"], [1 / 3, 1 / 3])
