"""HITL project on disk: create, accept, reopen, never overwrite, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from cp2_engine.hitl import HitlProject


def _disks(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return labels


def _data(rng, n=3, shape=(48, 48)):
    images, truths = [], []
    for _ in range(n):
        centres = rng.integers(8, shape[0] - 8, size=(4, 2))
        lab = _disks(shape, centres, 5)
        images.append((lab > 0).astype(np.float32) + 0.1 * rng.random(shape, dtype=np.float32))
        truths.append(lab)
    return images, truths


@pytest.fixture
def project(tmp_path, rng):
    images, truths = _data(rng)
    return HitlProject.create(
        tmp_path / "proj", images=images, ground_truth=truths, initial_model="scratch"
    )


def test_create_layout_and_reopen(project):
    folder = project.folder
    meta = json.loads((folder / "project.json").read_text())
    assert meta["schema_version"] == 1
    assert meta["initial_model"] == "scratch"
    assert [im["name"] for im in meta["images"]] == ["image_000", "image_001", "image_002"]
    assert (folder / "images" / "image_001.tif").is_file()
    assert (folder / "truth" / "image_001_masks.tif").is_file()
    again = HitlProject.open(folder)
    assert again.names == project.names
    np.testing.assert_array_equal(again.image("image_002"), project.image("image_002"))
    assert again.status().n_accepted == 0
    assert again.next_image() == "image_000"


def test_accept_counts_survive_reopening(project):
    pred = project.truth("image_000").copy()
    pred[pred == 4] = 0  # the model missed one cell
    tifffile.imwrite(project.folder / "predictions" / "image_000_pred.tif", pred)
    acc = project.accept("image_000", project.truth("image_000"))
    assert (acc.n_accepted, acc.n_edited, acc.n_drawn, acc.n_deleted) == (3, 0, 1, 0)
    again = HitlProject.open(project.folder)
    assert again.accounting("image_000") == acc
    assert again.next_image() == "image_001"
    status = again.status()
    assert (status.n_accepted, status.n_drawn_total, status.n_rounds) == (1, 1, 0)
    np.testing.assert_array_equal(again.corrected("image_000"), project.truth("image_000"))


def test_accept_without_prediction_counts_all_drawn(project):
    acc = project.accept("image_001", project.truth("image_001"))
    assert acc.n_drawn == len(np.unique(project.truth("image_001"))) - 1
    assert acc.n_accepted == 0


def test_accept_never_overwrites_without_consent(project):
    first = project.truth("image_000")
    project.accept("image_000", first)
    other = np.zeros_like(first)
    other[:5, :5] = 1
    with pytest.raises(FileExistsError, match="already accepted"):
        project.accept("image_000", other)
    np.testing.assert_array_equal(project.corrected("image_000"), first)
    project.accept("image_000", other, overwrite=True)
    np.testing.assert_array_equal(project.corrected("image_000"), other)
    backups = sorted((project.folder / "corrected" / "backup").glob("*_masks.tif"))
    assert len(backups) == 1
    np.testing.assert_array_equal(tifffile.imread(backups[0]), first)


def test_bad_inputs_give_clear_errors(project, tmp_path):
    labels = project.truth("image_000")
    with pytest.raises(ValueError, match="unknown image name"):
        project.accept("nope", labels)
    with pytest.raises(ValueError, match="shape"):
        project.accept("image_000", labels[:10])
    with pytest.raises(FileExistsError, match="already holds a project"):
        HitlProject.create(project.folder, images=[labels], initial_model="scratch")
    with pytest.raises(FileNotFoundError, match=r"project\.json"):
        HitlProject.open(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no such image"):
        HitlProject.create(tmp_path / "p2", images=[tmp_path / "none.tif"])
    bad = np.full((8, 8), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        HitlProject.create(tmp_path / "p3", images=[bad])
    with pytest.raises(TypeError, match="list of images"):
        HitlProject.create(tmp_path / "p5", images=np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="ground_truth"):
        HitlProject.create(tmp_path / "p4", images=[labels], ground_truth=[labels[:4]])
    assert project.corrected("image_000") is None


def test_corrupt_project_json_is_reported_and_left_alone(project):
    project.accept("image_000", project.truth("image_000"))
    path = project.folder / "project.json"
    path.write_text('{"schema_version": 1, "images": [')
    with pytest.raises(ValueError, match="corrupt project file"):
        HitlProject.open(project.folder)
    assert path.read_text() == '{"schema_version": 1, "images": ['
    assert (project.folder / "corrected" / "image_000_masks.tif").is_file()


def test_image_names_from_paths(tmp_path, rng):
    images, _ = _data(rng, n=2)
    paths = []
    for i, img in enumerate(images):
        p = tmp_path / f"cell {i}.tif"
        tifffile.imwrite(p, img)
        paths.append(p)
    proj = HitlProject.create(tmp_path / "proj", images=paths, initial_model="scratch")
    assert proj.names == ["cell_0", "cell_1"]
    with pytest.raises(ValueError, match="unique"):
        HitlProject.create(tmp_path / "x", images=images, names=["a", "a"])


def _tiny_config():
    from cp2_engine.training import TrainConfig

    return TrainConfig(
        n_epochs=1, bsize=32, batch_size=2, min_images_per_epoch=2, warmup_epochs=0,
        min_train_masks=1, device="cpu", save_every=100,
    )  # fmt: skip


@pytest.mark.slow
def test_end_to_end_round_uses_the_new_model(tmp_path):
    import torch

    from cp2_engine.hitl import SimulatedAnnotator
    from cp2_engine.inference import Model
    from cp2_engine.network import save_model
    from cp2_engine.synthetic import touching_cells
    from cp2_engine.training import TrainEvent

    cells = [touching_cells((64, 64), n_cells=6, diameter=16, seed=s) for s in range(2)]
    start = tmp_path / "start_model"
    save_model(Model.random(seed=1).net, start)
    proj = HitlProject.create(
        tmp_path / "proj", images=[c.image for c in cells], ground_truth=[c.labels for c in cells],
        initial_model=str(start), train_config=_tiny_config(), diameter=16, device="cpu",
    )  # fmt: skip
    name = proj.next_image()
    seg = proj.predict(name)
    correction = SimulatedAnnotator().correct(proj.truth(name), seg.masks)
    acc = proj.accept(name, correction.labels)
    assert acc.n_human == correction.n_drawn
    events = list(proj.iter_retrain(evaluate=False))
    assert events and all(isinstance(e, TrainEvent) for e in events)
    history = proj.history()
    assert [h.round for h in history] == [1]
    assert (history[0].n_images, history[0].n_drawn) == (1, acc.n_human)
    assert proj.current_model == "models/round_001"
    assert (proj.folder / "models" / "round_001").is_file()
    # the next image is predicted with the new model, whose weights differ from the start
    proj.predict(proj.next_image())
    pred_meta = json.loads((proj.folder / "predictions" / "image_001_pred.json").read_text())
    assert pred_meta["model"] == "models/round_001"
    new_w = proj.load_model().net.state_dict()["output.2.weight"]
    old_w = Model.load(start, device="cpu").net.state_dict()["output.2.weight"]
    assert not torch.equal(new_w, old_w)
    # reopening resumes with the same model, counts and history
    again = HitlProject.open(proj.folder, device="cpu")
    assert again.status().n_rounds == 1 and again.current_model == "models/round_001"
    assert again.accounting(name) == acc


@pytest.mark.slow
def test_cancelled_retrain_registers_nothing(project):
    from cp2_engine.training import TrainStarted

    project.accept("image_000", project.truth("image_000"))
    gen = project.iter_retrain(config=_tiny_config(), evaluate=False)
    assert isinstance(next(gen), TrainStarted)
    gen.close()
    again = HitlProject.open(project.folder)
    assert again.status().n_rounds == 0 and again.history() == []
    assert again.current_model == "scratch"


def test_retrain_without_accepted_images_is_an_error(project):
    with pytest.raises(ValueError, match="no accepted images"):
        project.retrain()


def test_multichannel_images_take_spatial_labels(tmp_path, rng):
    images, truths = _data(rng, n=1)
    first = np.stack([images[0], images[0] * 0.5])  # (2, H, W), channel first
    last = np.moveaxis(first, 0, -1)  # (H, W, 2)
    proj = HitlProject.create(tmp_path / "p", images=[first, last], initial_model="scratch")
    n_true = len(np.unique(truths[0])) - 1
    for name in proj.names:
        assert proj.accept(name, truths[0]).n_drawn == n_true
    np.testing.assert_array_equal(proj.image("image_000"), first)
    with pytest.raises(ValueError, match="shape"):
        proj.accept("image_001", np.zeros((2, 48), np.uint16), overwrite=True)


def test_set_prediction_checks_shape_and_feeds_the_accounting(tmp_path):
    import numpy as np
    import pytest

    from cp2_engine.hitl import HitlProject

    proj = HitlProject.create(tmp_path / "p", images=[np.ones((16, 16))], initial_model="scratch")
    with pytest.raises(ValueError, match="must have shape"):
        proj.set_prediction("image_000", np.zeros((8, 8), int), model="m")
    pred = np.zeros((16, 16), int)
    pred[2:6, 2:6] = 1
    proj.set_prediction("image_000", pred, model="m")
    corrected = pred.copy()
    corrected[10:14, 10:14] = 2
    acc = proj.accept("image_000", corrected)
    assert (acc.n_accepted, acc.n_drawn) == (1, 1)
