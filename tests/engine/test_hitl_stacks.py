"""HITL projects of z-stacks (stacks=True): 3-D images and labels through create, predict,
accept (ROI accounting of 3-D objects), reopen and a retraining round on the stacks' planes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cp2_engine.hitl import HitlProject
from cp2_engine.synthetic import touching_cells_3d


@pytest.fixture(scope="module")
def stacks():
    return [touching_cells_3d((6, 40, 40), diameter=14, anisotropy=2.0, seed=s) for s in (1, 2)]


def _config():
    from cp2_engine.training import TrainConfig

    return TrainConfig(
        n_epochs=1, bsize=32, batch_size=2, min_images_per_epoch=2, warmup_epochs=0,
        min_train_masks=1, device="cpu", save_every=100, anisotropy=2.0,
    )  # fmt: skip


def test_accept_3d_labels(tmp_path, stacks):
    s = stacks[0]
    two = np.stack([s.image, s.image], axis=-1)  # (Z, Y, X, C) too
    proj = HitlProject.create(tmp_path / "p", images=[s.image, two], stacks=True,
                              ground_truth=[s.labels, None], initial_model="scratch")  # fmt: skip
    assert proj.truth("image_000").shape == (6, 40, 40)
    pred = s.labels.copy()
    proj.set_prediction("image_000", pred, model="m")
    corrected = pred.copy()
    corrected[corrected == 2] = 0  # delete one 3-D cell
    corrected[0, :3, :3] = 99  # draw one
    acc = proj.accept("image_000", corrected)
    n = int(pred.max())
    assert (acc.n_accepted, acc.n_drawn, acc.n_deleted) == (n - 1, 1, 1)
    again = HitlProject.open(proj.folder)
    assert again.accounting("image_000") == acc
    np.testing.assert_array_equal(again.corrected("image_000") > 0, corrected > 0)
    with pytest.raises(ValueError, match="shape"):  # a 2-D plane is not the stack's labels
        again.accept("image_001", corrected[0])
    assert again.accept("image_001", corrected).n_drawn == n  # 4-D image, 3-D labels


def test_stack_inputs_are_checked(tmp_path, stacks):
    s = stacks[0]
    with pytest.raises(ValueError, match="z-stack"):
        HitlProject.create(tmp_path / "a", images=[s.image[0]], stacks=True)
    with pytest.raises(ValueError, match="ground_truth"):
        HitlProject.create(tmp_path / "b", images=[s.image], stacks=True,
                           ground_truth=[s.labels[:3]])  # fmt: skip
    tifffile.imwrite(tmp_path / "stack.tif", s.image)
    proj = HitlProject.create(tmp_path / "c", images=[tmp_path / "stack.tif"], stacks=True)
    assert proj.names == ["stack"] and proj.image("stack").shape == (6, 40, 40)
    # without stacks=True a (Z, Y, X) array is a 2-D image with channels: 3-D labels are refused
    flat = HitlProject.create(tmp_path / "d", images=[s.image], initial_model="scratch")
    with pytest.raises(ValueError, match="shape"):
        flat.accept("image_000", s.labels)


@pytest.mark.slow
def test_round_on_stacks(tmp_path, stacks):
    from cp2_engine.inference import Model
    from cp2_engine.network import save_model

    start = tmp_path / "start_model"
    save_model(Model.random(seed=1).net, start)
    proj = HitlProject.create(tmp_path / "p", images=[s.image for s in stacks], stacks=True,
                              initial_model=str(start), train_config=_config(), diameter=14,
                              device="cpu")  # fmt: skip
    seg = proj.predict("image_000")  # 3-D by default, with the config's anisotropy
    assert seg.masks.shape == (6, 40, 40) and seg.flows.shape == (3, 6, 40, 40)
    assert seg.config.do_3d and seg.config.anisotropy == 2.0
    proj.accept("image_000", stacks[0].labels)
    list(proj.iter_retrain(evaluate=False))
    assert proj.current_model == "models/round_001"
    assert proj.history()[0].n_images == 1
    assert proj.predict("image_001").masks.shape == (6, 40, 40)
