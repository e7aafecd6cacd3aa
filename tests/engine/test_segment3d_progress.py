"""Progress of z-stack segmentation: ``Model.iter_segment`` yields ``PlaneProgress`` per batch of
planes (YX/ZX/ZY for do_3d, "planes" when stitching, then "masks") and returns exactly what
``Model.segment`` returns."""

from __future__ import annotations

from itertools import groupby

import numpy as np
import pytest

from cp2_engine.inference import Model, PlaneProgress
from cp2_engine.synthetic import touching_cells_3d
from cp2_engine.util import drain


@pytest.fixture(scope="module")
def model():
    return Model.load("cp2_nuclei", device="cpu")


@pytest.fixture(scope="module")
def stack():
    return touching_cells_3d((6, 40, 40), diameter=12, seed=1).image


def _run(model, stack, **options):
    events = []
    seg = drain(model.iter_segment(stack, diameter=17, **options), on_event=events.append)
    return seg, events


def _check_order(events, stages):
    assert events and all(isinstance(e, PlaneProgress) for e in events)
    assert [stage for stage, _ in groupby(e.stage for e in events)] == stages  # in order, once
    for stage in stages:
        mine = [e for e in events if e.stage == stage]
        done = [e.done for e in mine]
        assert done[0] == 0 and done == sorted(done), (stage, done)
        assert len(set(done)) == len(done), (stage, done)  # one event per change
        assert {e.total for e in mine} == {mine[-1].total} and done[-1] == mine[-1].total > 0


def _assert_same(a, b):
    for name in ("masks", "flows", "cellprob", "style"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert (a.diameter, a.rescale, a.niter, a.config) == (b.diameter, b.rescale, b.niter, b.config)


def test_do_3d_progress_and_same_result(model, stack):
    seg, events = _run(model, stack, do_3d=True, batch_size=4)
    _check_order(events, ["YX planes", "ZX planes", "ZY planes", "masks"])
    totals = {e.stage: e.total for e in events}
    net_zyx = tuple(int(n * model.diam_mean / 17) for n in stack.shape)  # planes at net scale
    assert (totals["YX planes"], totals["ZX planes"], totals["ZY planes"]) == net_zyx
    assert totals["masks"] == 1
    assert seg.n_masks > 0
    _assert_same(seg, model.segment(stack, diameter=17, do_3d=True, batch_size=4))


def test_stitched_progress_and_same_result(model, stack):
    seg, events = _run(model, stack, stitch_threshold=0.25)
    _check_order(events, ["planes", "masks"])
    n = stack.shape[0]
    assert [e for e in events if e.stage == "planes"][-1] == PlaneProgress.of("planes", n, n)
    _assert_same(seg, model.segment(stack, diameter=17, stitch_threshold=0.25))


def test_2d_image_yields_nothing(model, stack):
    seg, events = _run(model, stack[3])
    assert events == []
    _assert_same(seg, model.segment(stack[3], diameter=17))


def test_constant_stack_yields_nothing(model):
    seg, events = _run(model, np.ones((3, 20, 20)), do_3d=True)
    assert events == [] and seg.n_masks == 0


def test_run_planes_equals_its_generator(model, stack):
    from cp2_engine.inference import SegmentConfig
    from cp2_engine.inference._planes import iter_run_planes, run_planes

    x = np.stack([stack, np.zeros_like(stack)])
    cfg = SegmentConfig(batch_size=3)
    kw = {"device": "cpu", "channels_last": False}
    events = []
    got = drain(iter_run_planes(model.net, x, cfg, stage="YX planes", **kw), events.append)
    ref = run_planes(model.net, x, cfg, **kw)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert got[2] == ref[2]
    assert [e.done for e in events] == [0, 3, 6]  # one tile per plane: 3 planes per batch
