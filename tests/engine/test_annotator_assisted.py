"""The simulated annotator's "assisted" count: drawn ROIs one click would have produced."""

from __future__ import annotations

import numpy as np

from cp2_engine.hitl import SimulatedAnnotator
from cp2_engine.inference import SegmentConfig
from cp2_engine.inference._segmentation import Segmentation
from cp2_engine.postprocess import masks_to_flows
from cp2_engine.synthetic import touching_cells


def test_assisted_counts_the_drawn_rois_a_click_recovers():
    truth = touching_cells((128, 128), n_cells=12, diameter=20, seed=5).labels
    ids = np.unique(truth[truth > 0])
    missed_a, missed_b = ids[2], ids[6]
    pred = np.where(np.isin(truth, [missed_a, missed_b]), 0, truth)
    cellprob = np.where(truth > 0, 4.0, -8.0).astype(np.float32)
    cellprob[truth == missed_a] = -1.5  # a faint cell: its flows still converge
    cellprob[truth == missed_b] = -9.0  # nothing in the network output: a click cannot help
    seg = Segmentation(
        masks=pred, flows=(5 * masks_to_flows(truth)).astype(np.float32), cellprob=cellprob,
        style=np.zeros(256, np.float32), diameter=20.0, rescale=1.0, niter=200,
        config=SegmentConfig(diameter=20.0),
    )  # fmt: skip
    annotator = SimulatedAnnotator()
    c = annotator.correct(truth, pred, segmentation=seg)
    assert (c.n_kept, c.n_drawn, c.n_fixed, c.n_assisted) == (len(ids) - 2, 2, 0, 1)
    assert annotator.correct(truth, pred).n_assisted == 0  # without the model's output
