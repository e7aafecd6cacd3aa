"""Shared network tiles for large images: blocks together give exactly one whole-image pass."""

from __future__ import annotations

import numpy as np
import pytest

from cp2_engine.inference import Model, SegmentConfig, resize_image
from cp2_engine.large import BlockGrid, NetworkLayout
from cp2_engine.large._network import (
    blended_output,
    block_intensity_stats,
    intensity_range,
    network_input,
    network_sums,
)
from cp2_engine.synthetic import touching_cells


def _blocks_output(model, image, *, diameter, blocksize, overlap, config):
    """Network output at every block crop, computed block by block as the workers do."""
    grid = BlockGrid(image.shape[:2], blocksize, overlap)
    layout = NetworkLayout.build(
        image.shape[:2],
        blocksize=blocksize,
        rescale=model.diam_mean / diameter,
        augment=config.augment,
    )
    stats = [
        block_intensity_stats(
            image[grid.core(*b)], core=grid.core(*b), shape=grid.shape, config=config
        )
        for b in grid.indices()
    ]
    ranges = intensity_range(stats, dtype=image.dtype)
    sums = {}
    for b in grid.indices():
        window = layout.window_of(*b)
        if window is None:
            continue
        region = layout.image_region_for(window)
        x = network_input(
            image[region],
            region=region,
            window=window,
            layout=layout,
            config=config,
            ranges=ranges,
            nchan=model.net.nchan,
        )
        sums[b] = (
            window,
            network_sums(
                model,
                x,
                tiles=layout.tiles_of(*b),
                window=window,
                tile=layout.grid.tile,
                config=config,
            ),
        )
    assert sum(len(layout.tiles_of(*b)) for b in grid.indices()) == layout.grid.n_tiles

    def read(block, win):
        own, s = sums[block]
        return s[:, win[0] - own[0] : win[1] - own[0], win[2] - own[2] : win[3] - own[2]]

    out = {}
    for b in grid.indices():
        crop = grid.crop(*b)
        sources = layout.sources_for(layout.window_for_crop(crop), grid.n_blocks)
        out[b] = blended_output(read, sources=sources, crop=crop, layout=layout)
    return grid, out


def _one_pass(model, image, *, diameter, config):
    x = model._prepare(image, config)
    y, _ = model._network(x, config, model.diam_mean / diameter)
    return resize_image(y, shape=image.shape[:2]) if y.shape[1:] != image.shape[:2] else y


@pytest.mark.parametrize(
    ("diameter", "augment", "dtype"),
    [(30, False, "uint16"), (20, False, "float32"), (45, True, "uint8")],
)
def test_blocks_give_the_network_output_of_one_pass(diameter, augment, dtype):
    model = Model.random(seed=1, diam_mean=30)
    sample = touching_cells((700, 610), diameter=diameter, seed=3)
    scale = {"uint16": 65535, "uint8": 255, "float32": 1}[dtype]
    image = (sample.image * scale).astype(dtype)
    config = SegmentConfig(augment=augment)
    grid, blocks = _blocks_output(
        model, image, diameter=diameter, blocksize=256, overlap=2 * diameter, config=config
    )
    whole = _one_pass(model, image, diameter=diameter, config=config)
    for b, y in blocks.items():
        np.testing.assert_allclose(y, whole[(slice(None), *grid.crop(*b))], atol=2e-4)


def test_whole_image_percentiles_from_block_histograms_are_exact():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, size=(300, 200)).astype(np.uint16)
    grid = BlockGrid(image.shape, 128, 0)
    stats = [
        block_intensity_stats(
            image[grid.core(*b)], core=grid.core(*b), shape=image.shape, config=SegmentConfig()
        )
        for b in grid.indices()
    ]
    ((lo, hi),) = intensity_range(stats, dtype=image.dtype)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(image.astype(np.float32), [1, 99])))


def test_rgb_mean_and_nuclear_channels_get_their_own_percentiles():
    rng = np.random.default_rng(1)
    image = rng.random((400, 300, 3)).astype(np.float32)
    grid = BlockGrid(image.shape[:2], 128, 0)
    config = SegmentConfig(channels=(0, 3))
    stats = [
        block_intensity_stats(
            image[grid.core(*b)], core=grid.core(*b), shape=grid.shape, config=config
        )
        for b in grid.indices()
    ]
    ranges = intensity_range(stats, dtype=image.dtype)
    assert len(ranges) == 2  # the segmented channel and the nuclear channel
    assert ranges[0] == pytest.approx(tuple(np.percentile(image.mean(-1), [1, 99])), abs=1e-3)
    assert ranges[1] == pytest.approx(tuple(np.percentile(image[..., 2], [1, 99])), abs=1e-3)
