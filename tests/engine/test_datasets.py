"""Tests of dataset loading and the dataset utilities (cp2_engine.training._datasets)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage import io as skio

from cp2_engine.training import (
    Subset,
    from_arrays,
    load_folder,
    remove_overlaps,
    split_quarters,
    take_subset,
    training_subsets,
)
from cp2_engine.training._datasets import default_subset_sizes


def _disk(shape, cy, cx, r):
    yy, xx = np.indices(shape)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _labels(rng, shape=(32, 32), n=3):
    lab = np.zeros(shape, np.uint16)
    for i in range(n):
        cy, cx = rng.integers(6, shape[0] - 6, 2)
        lab[_disk(shape, cy, cx, 4)] = i + 1
    return lab


# ----------------------------------------------------------------------------- loading
def test_load_folder_all_layouts(tmp_path, rng):
    labs = [_labels(rng) for _ in range(4)]
    imgs = [rng.integers(0, 255, (32, 32), dtype=np.uint8) for _ in range(4)]
    tifffile.imwrite(tmp_path / "a_img.tif", imgs[0])
    tifffile.imwrite(tmp_path / "a_masks.tif", labs[0])
    tifffile.imwrite(tmp_path / "b.tif", imgs[1])
    skio.imsave(tmp_path / "b_masks.png", labs[1], check_contrast=False)
    skio.imsave(tmp_path / "c.png", imgs[2], check_contrast=False)
    np.save(tmp_path / "c_seg.npy", {"masks": labs[2], "outlines": None}, allow_pickle=True)
    tifffile.imwrite(tmp_path / "d.tif", imgs[3])  # no labels
    with pytest.raises(FileNotFoundError, match=r"no labels for d\.tif"):
        load_folder(tmp_path)
    data = load_folder(tmp_path, require_labels=False)
    assert data.names == ["a", "b", "c"]
    for got_i, got_l, want_i, want_l in zip(data.images, data.labels, imgs, labs):
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_array_equal(got_l, want_l)


def test_load_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_folder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no labelled images"):
        load_folder(tmp_path)
    np.save(tmp_path / "x_seg.npy", {"outlines": 1}, allow_pickle=True)
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="'masks'"):
        load_folder(tmp_path)


def test_the_usiigaci_layout_loads(tmp_path):
    """``<id>_img.tif`` + ``<id>_masks.tif`` (the Usiigaci / recipe dataset layout), built here
    instead of read from a shared folder."""
    for i in range(3):
        tifffile.imwrite(tmp_path / f"{i:03d}_img.tif", np.full((16, 16), i, np.uint8))
        tifffile.imwrite(tmp_path / f"{i:03d}_masks.tif", np.full((16, 16), i + 1, np.uint16))
    data = load_folder(tmp_path, require_labels=True)
    assert data.names == ["000", "001", "002"]
    assert [int(lab.max()) for lab in data.labels] == [1, 2, 3]  # each image its own labels
    assert [int(im.max()) for im in data.images] == [0, 1, 2]


def test_from_arrays_checks(rng):
    lab = _labels(rng)
    assert len(from_arrays([np.zeros((32, 32, 3))], [lab])) == 1
    assert len(from_arrays([np.zeros((2, 32, 32))], [lab])) == 1
    with pytest.raises(ValueError, match="1 images but 2"):
        from_arrays([np.zeros((32, 32))], [lab, lab])
    with pytest.raises(ValueError, match="empty"):
        from_arrays([], [])
    with pytest.raises(ValueError, match="does not match"):
        from_arrays([np.zeros((30, 32))], [lab])
    with pytest.raises(ValueError, match="integer"):
        from_arrays([np.zeros((32, 32))], [lab.astype(float)])


# ----------------------------------------------------------------------------- overlaps
def test_remove_overlaps_nearest_centroid():
    shape = (40, 60)
    a, b = _disk(shape, 20, 20, 10), _disk(shape, 20, 34, 10)
    out = remove_overlaps(np.stack([a, b]))
    both = a & b
    _yy, xx = np.indices(shape)
    closer_a = (xx - 20) ** 2 < (xx - 34) ** 2
    np.testing.assert_array_equal(out[both & closer_a], 1)
    np.testing.assert_array_equal(out[both & ~closer_a & ((xx - 20) ** 2 != (xx - 34) ** 2)], 2)
    np.testing.assert_array_equal(out[a & ~b], 1)
    np.testing.assert_array_equal(out[b & ~a], 2)
    assert out.dtype == np.uint32


def _reference_overlaps(stack, max_loss=0.75):
    """Brute force: distance of every pixel to every covering mask's centroid."""
    n = stack.shape[0]
    yy, xx = np.indices(stack.shape[1:])
    cents = [(yy[m].mean(), xx[m].mean()) for m in stack]
    dist = np.stack([(yy - cy) ** 2 + (xx - cx) ** 2 for cy, cx in cents])
    dist[~stack] = np.inf
    owner = np.where(stack.any(0), dist.argmin(0) + 1, 0)
    kept = np.array([(owner == i + 1).sum() for i in range(n)])
    keep = kept >= (1 - max_loss) * stack.sum((1, 2))
    out = np.zeros_like(owner)
    for new, old in enumerate(np.flatnonzero(keep), start=1):
        out[owner == old + 1] = new
    return out, n - keep.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_remove_overlaps_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = (48, 48)
    stack = np.stack([_disk(shape, *rng.uniform(8, 40, 2), rng.uniform(4, 12)) for _ in range(14)])
    expected, _ = _reference_overlaps(stack)
    np.testing.assert_array_equal(remove_overlaps(stack), expected)


def test_remove_overlaps_drops_a_mask_that_loses_most_pixels():
    # a disk under 4 overlapping neighbours keeps only the pixels nearer its own centroid than
    # any neighbour's (a 5x5 square, 16% of its area); the neighbours keep more than half
    shape = (60, 60)
    ring = [_disk(shape, 30 + dy, 30 + dx, 8) for dy, dx in ((5, 0), (-5, 0), (0, 5), (0, -5))]
    small = _disk(shape, 30, 30, 7)
    stack = np.stack([small, *ring])
    expected, n_dropped = _reference_overlaps(stack)
    out = remove_overlaps(stack)
    np.testing.assert_array_equal(out, expected)
    assert n_dropped == 1 and out.max() == 4  # only the middle disk was dropped


def test_remove_overlaps_edge_cases():
    shape = (40, 40)
    big = _disk(shape, 20, 20, 10)
    centred = np.zeros(shape, bool)
    centred[19:22, 19:22] = True  # same centroid as big: the earlier mask wins the tie
    out = remove_overlaps([big, centred])
    assert out.max() == 1 and (out == 1).sum() == big.sum()
    out = remove_overlaps([big, np.zeros(shape, bool), centred])
    assert out.max() == 1
    assert remove_overlaps(np.zeros((0, 5, 5), bool)).shape == (5, 5)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        remove_overlaps(np.zeros((5, 5), bool))


# ----------------------------------------------------------------------------- quarters
def test_split_quarters(rng):
    img = rng.random((512, 512, 3))
    lab = np.zeros((512, 512), np.uint16)
    lab[250:262, 250:262] = 7  # spans all four quarters
    lab[10:20, 300:310] = 3
    parts = split_quarters(img, lab)
    assert len(parts) == 4
    np.testing.assert_array_equal(parts[1][0], img[:256, 256:])
    np.testing.assert_array_equal(parts[2][0], img[256:, :256])
    assert parts[1][1].max() == 2 and set(np.unique(parts[1][1])) == {0, 1, 2}
    assert all(p[1].max() >= 1 for p in parts)
    chw = split_quarters(np.moveaxis(img, -1, 0), lab)
    np.testing.assert_array_equal(chw[3][0], np.moveaxis(img, -1, 0)[:, 256:, 256:])
    assert [q.shape for q in split_quarters(np.zeros((512, 512)))] == [(256, 256)] * 4
    with pytest.raises(ValueError, match="does not match"):
        split_quarters(img, lab[:100])


# ----------------------------------------------------------------------------- subsets
def test_training_subsets():
    assert default_subset_sizes(10) == (0.25, 0.5, 1, 2, 4, 8)
    subs = training_subsets(10, n_seeds=5, seed=1)
    assert len(subs) == 6 * 5
    for s in subs:
        assert len(s.indices) == max(1, int(s.size))
        assert len(set(s.indices)) == len(s.indices) and max(s.indices) < 10
    by_size = {}
    for s in subs:
        by_size.setdefault(s.size, []).append(s)
    assert all(len(v) == 5 for v in by_size.values())
    assert len({s.indices for s in by_size[4]}) > 1  # seeds differ
    assert subs == training_subsets(10, n_seeds=5, seed=1)  # reproducible
    quarter = by_size[0.25][0].region
    assert (quarter[1] - quarter[0]) * (quarter[3] - quarter[2]) == 0.25
    half = by_size[0.5][0].region
    assert (half[1] - half[0]) * (half[3] - half[2]) == 0.5
    with pytest.raises(ValueError, match="subset size"):
        training_subsets(3, sizes=(4,))
    with pytest.raises(ValueError, match="n_seeds"):
        training_subsets(3, n_seeds=0)


def test_take_subset_crops(rng):
    imgs = [rng.random((40, 60)) for _ in range(3)]
    labs = [_labels(rng, (40, 60)) for _ in range(3)]
    half = Subset(size=0.5, seed=0, indices=(2,), region=(0.0, 1.0, 0.5, 1.0))
    i, lb = take_subset(imgs, labs, half)
    np.testing.assert_array_equal(i[0], imgs[2][:, 30:])
    assert lb[0].shape == (40, 30)
    whole = Subset(size=2, seed=0, indices=(0, 1))
    i, lb = take_subset(imgs, labs, whole)
    assert len(i) == 2
    np.testing.assert_array_equal(lb[1], labs[1])
