"""Training on z-stacks: a (Z, Y, X) pair becomes 2-D planes in YX, ZY and ZX (Z resized by the
anisotropy), labels relabelled per plane, sparse planes dropped; iter_train takes such pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cp2_engine.network import CPnet
from cp2_engine.synthetic import touching_cells, touching_cells_3d
from cp2_engine.training import TrainConfig, TrainStarted, iter_train, stack_to_planes
from cp2_engine.training._stacks import is_stack_pair


@pytest.fixture(scope="module")
def stack():
    return touching_cells_3d((6, 40, 48), diameter=12, anisotropy=2.0, seed=3)


def test_three_orientations_with_anisotropy(stack):
    ims, labs = stack_to_planes(stack.image, stack.labels, anisotropy=2.0, min_masks=0)
    lab = stack.labels
    z, y, x = lab.shape
    # empty planes are always dropped
    nz, nx, ny = (int(lab.any(axis=axes).sum()) for axes in ((1, 2), (0, 1), (0, 2)))
    assert nz == z and nx + ny > 0.8 * (x + y)
    assert len(ims) == len(labs) == nz + nx + ny
    shapes = [lab.shape for lab in labs]
    assert shapes[:nz] == [(y, x)] * nz
    assert shapes[nz : nz + nx] == [(2 * z, y)] * nx  # ZY planes, one per x, Z doubled
    assert shapes[nz + nx :] == [(2 * z, x)] * ny  # ZX planes, one per y
    assert all(im.shape == lab.shape for im, lab in zip(ims, labs))
    np.testing.assert_array_equal(ims[2], stack.image[2])
    for lab in labs:  # consecutive ids per plane
        ids = np.unique(lab[lab > 0])
        assert ids.tolist() == list(range(1, len(ids) + 1))


def test_planes_match_the_stack_and_split_pieces():
    lab = np.zeros((3, 10, 10), np.uint16)
    lab[:, 2:8, 2:4] = 7
    lab[:, 2:8, 6:8] = 7  # one 3-D label that a YX plane cuts into two pieces
    lab[1, 0, 0] = 9
    img = (lab > 0).astype(np.float32)
    _, labs = stack_to_planes(img, lab, min_masks=2)
    # YX planes (2 pieces, 3 ROIs at z=1), no ZY plane (1 ROI each), ZX planes y=2..7
    assert len(labs) == 3 + 0 + 6
    assert [int(m.max()) for m in labs[:4]] == [2, 3, 2, 2]
    np.testing.assert_array_equal(labs[1] > 0, lab[1] > 0)


def test_channels_and_errors(stack):
    two = np.stack([stack.image, stack.image[::-1]], axis=-1)
    ims, labs = stack_to_planes(two, stack.labels, anisotropy=2.0, max_planes_per_axis=4)
    assert len(ims) <= 12 and all(im.shape == (*lab.shape, 2) for im, lab in zip(ims, labs))
    assert is_stack_pair(stack.image, stack.labels)
    assert not is_stack_pair(stack.image[0], stack.labels[0])
    with pytest.raises(ValueError, match="matching its labels"):
        stack_to_planes(stack.image[:, :10], stack.labels)
    with pytest.raises(ValueError, match="anisotropy"):
        stack_to_planes(stack.image, stack.labels, anisotropy=0)
    with pytest.raises(ValueError, match="anisotropy"):
        TrainConfig(anisotropy=-1.0)


def test_iter_train_takes_a_stack_with_2d_images(stack):
    flat = touching_cells((48, 48), diameter=12, seed=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = CPnet(nbase=[2, 8, 16], diam_mean=16.0)
    cfg = TrainConfig(n_epochs=1, bsize=32, batch_size=4, min_images_per_epoch=4,
                      warmup_epochs=1, learning_rate=0.05, device="cpu", anisotropy=2.0,
                      min_train_masks=3)  # fmt: skip
    events = list(iter_train(net, [stack.image, flat.image], [stack.labels, flat.labels],
                             config=cfg))  # fmt: skip
    started = next(e for e in events if isinstance(e, TrainStarted))
    n_planes = len(stack_to_planes(stack.image, stack.labels, anisotropy=2.0, min_masks=3)[0])
    assert started.n_images == n_planes + 1 and n_planes > 20
    assert all(np.isfinite(e.loss) for e in events if hasattr(e, "loss"))
