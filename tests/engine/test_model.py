"""Tests of Model: loading, the segment pipeline, rescaling, diameter estimation, recompute."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cp2_engine.inference import (
    Model,
    Segmentation,
    SegmentConfig,
    SizeModel,
    convert_image,
    run_tiled,
)
from cp2_engine.metrics import average_precision
from cp2_engine.network import save_model
from cp2_engine.synthetic import disks


class _BlobNet(nn.Module):
    """A fixed, fully convolutional stand-in for a trained net that segments bright blobs.

    Flows = 5 x unit gradient of the Gaussian-blurred image (points to blob centres),
    cellprob = 20 * (image - 0.5). It sees only the network input, never the labels.
    """

    nbase = (2, 8)
    nchan = 2

    def __init__(self, sigma: float = 6.0) -> None:
        super().__init__()
        r = math.ceil(3 * sigma)
        g = torch.exp(-0.5 * (torch.arange(-r, r + 1.0) / sigma) ** 2)
        self.register_buffer("g", (g / g.sum()).reshape(1, 1, 1, -1))
        self.diam_mean = nn.Parameter(torch.tensor([30.0]), requires_grad=False)
        self.diam_labels = nn.Parameter(torch.tensor([30.0]), requires_grad=False)

    def forward(self, x):
        img = x[:, :1]
        pad = self.g.shape[-1] // 2
        b = F.conv2d(F.pad(img, (pad, pad, 0, 0), mode="replicate"), self.g)
        b = F.conv2d(F.pad(b, (0, 0, pad, pad), mode="replicate"), self.g.transpose(-1, -2))
        bp = F.pad(b, (1, 1, 1, 1), mode="replicate")
        dy = bp[..., 2:, 1:-1] - bp[..., :-2, 1:-1]
        dx = bp[..., 1:-1, 2:] - bp[..., 1:-1, :-2]
        norm = torch.sqrt(dy**2 + dx**2) + 1e-8
        y = torch.cat([5 * dy / norm, 5 * dx / norm, 20 * (img - 0.5)], dim=1)
        return y, torch.full((x.shape[0], 8), 8**-0.5)


def _blob_model(size_model=None) -> Model:
    return Model.from_net(_BlobNet(), size_model=size_model, device="cpu")


def _size_model(d_style: float) -> SizeModel:
    return SizeModel(A=np.zeros(8), smean=np.zeros(8), ymean=math.log(d_style / 30), diam_mean=30)


@pytest.fixture(scope="module")
def blobs():
    return disks((160, 160), n_disks=12, radius=9.0, seed=3)


def test_segments_blobs_at_the_given_diameter(blobs):
    seg = _blob_model().segment(blobs.image, diameter=18.0)
    assert isinstance(seg, Segmentation)
    assert seg.rescale == pytest.approx(30 / 18)
    assert seg.masks.shape == seg.cellprob.shape == blobs.image.shape
    assert seg.flows.shape == (2, *blobs.image.shape) and seg.flows.dtype == np.float32
    assert average_precision(blobs.labels, seg.masks).ap[0, 0] > 0.9
    assert {"prepare", "network", "masks", "total"} <= set(seg.timings)


def test_resample_false_gives_masks_at_original_size(blobs):
    seg = _blob_model().segment(blobs.image, diameter=18.0, resample=False)
    assert seg.masks.shape == blobs.image.shape
    assert average_precision(blobs.labels, seg.masks).ap[0, 0] > 0.8


def test_two_step_diameter_refines_a_wrong_style_estimate(blobs):
    model = _blob_model(size_model=_size_model(26.0))  # true diameter is ~18
    estimate = model.estimate_diameter(blobs.image)
    assert estimate == pytest.approx(18.0, rel=0.15)
    seg = model.segment(blobs.image)
    assert seg.diameter == pytest.approx(estimate)
    assert "diameter" in seg.timings


def test_without_size_model_uses_diam_labels(blobs):
    model = _blob_model()
    model.net.diam_labels.data[:] = 20.0
    assert model.segment(blobs.image).diameter == 20.0


def test_segment_matches_the_manual_pipeline(rng):
    model = Model.random(seed=2)
    image = rng.random((70, 90)).astype(np.float32)
    seg = model.segment(image, diameter=30.0, flow_threshold=0.0)
    x = convert_image(image, normalize=True)
    y, style = run_tiled(model.net, x)
    np.testing.assert_allclose(seg.flows, y[:2], atol=1e-5)
    np.testing.assert_allclose(seg.cellprob, y[2], atol=1e-5)
    np.testing.assert_allclose(seg.style, style, atol=1e-6)
    assert np.linalg.norm(seg.style) == pytest.approx(1.0, abs=1e-5)


def test_random_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = Model.random(seed=5), Model.random(seed=5), Model.random(seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)
    wa, wb, wc = (m.net.output[2].weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert "random" in a.name


def test_load_round_trip_gives_identical_output(tmp_path, rng):
    model = Model.random(seed=1)
    path = tmp_path / "my_model"
    save_model(model.net, path)
    loaded = Model.load(path, device="cpu")
    image = rng.random((48, 64))
    a = model.segment(image, diameter=30.0)
    b = loaded.segment(image, diameter=30.0)
    np.testing.assert_array_equal(a.flows, b.flows)
    assert loaded.name == "my_model"
    with pytest.raises(FileNotFoundError):
        Model.load(tmp_path / "missing")


def test_constant_image_gives_empty_masks_and_warns(caplog):
    with caplog.at_level(logging.WARNING):
        seg = Model.random(seed=0).segment(np.full((40, 30), 3.0), diameter=30.0)
    assert seg.n_masks == 0 and seg.masks.shape == (40, 30)
    assert "constant" in caplog.text


def test_recompute_masks_reuses_flows(blobs):
    model = _blob_model()
    seg = model.segment(blobs.image, diameter=18.0)
    same = model.recompute_masks(seg)
    np.testing.assert_array_equal(same.masks, seg.masks)
    none = model.recompute_masks(seg, cellprob_threshold=50.0)
    assert none.n_masks == 0 and none.config.cellprob_threshold == 50.0
    small = model.recompute_masks(seg, min_size=10_000)
    assert small.n_masks == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image": np.full((20, 20), np.nan)}, ValueError, "NaN"),
        ({"image": np.zeros(20)}, ValueError, "2-D"),
        ({"image": np.zeros((20, 20)), "channels": (2, 0)}, ValueError, "channel"),
        ({"image": np.zeros((20, 20)), "flow_thresh": 0.1}, TypeError, "unknown"),
        ({"image": np.ones((20, 20)), "diameter": -3.0}, ValueError, "diameter"),
        ({"image": np.ones((20, 20)), "config": {"a": 1}}, TypeError, "SegmentConfig"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        Model.random(seed=0).segment(**kwargs)


def test_segment_many_yields_progress(rng):
    images = [rng.random((32, 32)), rng.random((40, 24))]
    steps = list(Model.random(seed=0).segment_many(images, diameter=30.0))
    assert [(s.done, s.total) for s in steps] == [(1, 2), (2, 2)]
    assert steps[1].segmentation.masks.shape == (40, 24)


def test_config_validation():
    with pytest.raises(ValueError, match="bsize"):
        SegmentConfig(bsize=100)
    with pytest.raises(ValueError, match="channels"):
        SegmentConfig(channels=(1,))
    with pytest.raises(ValueError, match="tile_overlap"):
        SegmentConfig(tile_overlap=0.9)
    assert SegmentConfig(channels=[2, 1]).channels == (2, 1)


def test_style_matches_segment_style(rng):
    model = Model.random(seed=4)
    image = rng.random((60, 60))
    np.testing.assert_allclose(
        model.style(image, diameter=20.0), model.segment(image, diameter=20.0).style, atol=1e-6
    )


def test_zoo_prefix_is_dispatched_to_the_zoo_loader(tmp_path):
    import pytest

    from cp2_engine.inference import Model, Segmenter
    from cp2_engine.segmenters import load_segmenter

    with pytest.raises(FileNotFoundError, match="zoo"):
        load_segmenter(f"zoo:{tmp_path / 'no_such_zoo'}")
    # Model.load loads one network: a zoo key gets a clear error naming the factory
    with pytest.raises(ValueError, match="load_segmenter"):
        Model.load(f"zoo:{tmp_path / 'no_such_zoo'}")
    assert isinstance(load_segmenter("cp2_nuclei", device="cpu"), Segmenter)


def test_channels_last_by_default_on_cpu_gives_the_nchw_results(rng):
    image = rng.random((100, 120)).astype(np.float32)
    nchw = Model.random(seed=4).segment(image, diameter=30.0, channels_last=False)
    model = Model.random(seed=4)
    default = model.segment(image, diameter=30.0)
    assert model.net.output[2].weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(default.flows, nchw.flows, atol=1e-4)
    np.testing.assert_allclose(default.cellprob, nchw.cellprob, atol=1e-4)
    np.testing.assert_allclose(default.style, nchw.style, atol=1e-5)


def test_a_net_without_conv_kernels_runs_with_the_default_layout(blobs):
    seg = _blob_model().segment(blobs.image, diameter=18.0, channels_last=None)
    assert average_precision(blobs.labels, seg.masks).ap[0, 0] > 0.9
