"""End-to-end tests of a tiny zoo: build (1 epoch), resume, route, segment, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cp2_engine.inference import Model
from cp2_engine.synthetic import touching_cells
from cp2_engine.zoo import ZooBuildConfig, ZooModel, iter_build_zoo, load_zoo
from cp2_engine.zoo._build import balanced_indices

TINY_TRAIN = {
    "bsize": 32,
    "batch_size": 2,
    "min_images_per_epoch": 2,
    "warmup_epochs": 0,
    "device": "cpu",
}


def two_style_data(n_per_style=2, seed=0):
    images, labels, truth = [], [], []
    for i in range(2 * n_per_style):
        kind = i % 2
        s = touching_cells(
            (96, 96),
            diameter=(14, 24)[kind],
            seed=seed + i,
            style=("fluorescence", "brightfield")[kind],
        )
        images.append(s.image)
        labels.append(s.labels)
        truth.append(kind)
    return images, labels, np.array(truth)


def run_build(images, labels, out, *, base_model, config):
    gen = iter_build_zoo(images, labels, base_model=base_model, out=out, config=config)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return stop.value, events


@pytest.fixture(scope="module")
def base():
    with torch.random.fork_rng(devices=[]):
        return Model.random(seed=0)


@pytest.fixture(scope="module")
def built(tmp_path_factory, base):
    images, labels, truth = two_style_data()
    out = tmp_path_factory.mktemp("zoo")
    zoo, events = run_build(
        images,
        labels,
        out,
        base_model=base,
        config=ZooBuildConfig(
            n_neighbors=1, resolution=0.45, epochs=1, seed=0, train_overrides=TINY_TRAIN
        ),
    )
    return zoo, events, images, labels, truth, out


@pytest.mark.slow
def test_build_writes_a_loadable_zoo_with_planted_clusters(built):
    zoo, events, _, _, truth, out = built
    assert zoo.folder == out
    assert len(zoo.manifest.clusters) == 2
    # the two imaging styles are the two clusters
    assert len({tuple(truth[zoo.labels == c]) for c in (0, 1)}) == 2
    assert all(len(set(truth[zoo.labels == c])) == 1 for c in (0, 1))
    stages = [e.stage for e in events]
    assert stages.count("model_saved") == 3  # 2 specialists + generalist
    assert "train" in stages and stages[-1] == "manifest"
    assert load_zoo(out).manifest == zoo.manifest
    for c in zoo.manifest.clusters:
        assert c.n_images == 2 and c.diam_labels > 0


@pytest.mark.slow
def test_resume_skips_finished_models_and_rejects_other_settings(built, base):
    _, _, images, labels, _, out = built
    stamp = (out / "models/cluster0.pth").stat().st_mtime_ns
    zoo2, events = run_build(
        images,
        labels,
        out,
        base_model=base,
        config=ZooBuildConfig(
            n_neighbors=1, resolution=0.45, epochs=1, seed=0, train_overrides=TINY_TRAIN
        ),
    )
    assert [e.stage for e in events].count("skip") == 3
    assert "train" not in [e.stage for e in events]
    assert zoo2.manifest == built[0].manifest
    assert (out / "models/cluster0.pth").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="resolution"):
        run_build(
            images,
            labels,
            out,
            base_model=base,
            config=ZooBuildConfig(
                n_neighbors=1, resolution=1.0, epochs=1, seed=0, train_overrides=TINY_TRAIN
            ),
        )


@pytest.mark.slow
def test_zoo_model_routes_to_the_right_specialist(built):
    zoo, _, _, _, truth, out = built
    model = ZooModel.load(f"zoo:{out}", device="cpu")
    img = touching_cells((96, 96), diameter=24, seed=99, style="brightfield").image
    result = model.segment(img, diameter=24)
    expected = int(zoo.labels[truth == 1][0])
    assert result.route.cluster == expected
    assert result.route.model_name == f"cluster{expected}"
    assert result.masks.shape == (96, 96)
    assert len(result.route.votes) == 4  # 5 neighbours clamped to 4 styles


@pytest.mark.slow
def test_a_zoo_is_a_full_segmenter(built):
    """Every Segmenter method works on a zoo, each through the specialist the image routes to."""
    from cp2_engine.inference import Segmenter
    from cp2_engine.segmenters import load_segmenter

    out = built[5]
    model = load_segmenter(f"zoo:{out}", device="cpu")
    assert isinstance(model, Segmenter)
    img = touching_cells((96, 96), diameter=24, seed=99, style="brightfield").image
    seg = model.segment(img, diameter=24)
    again = model.recompute_masks(seg, cellprob_threshold=50.0)
    assert again.route == seg.route and again.masks.max() == 0
    assert model.style(img).shape == (256,)
    steps = list(model.segment_many([img, img], diameter=24))
    assert [s.done for s in steps] == [1, 2]
    assert steps[0].segmentation.route.cluster == seg.route.cluster
    with pytest.raises(ValueError, match="size model"):  # these specialists have none
        model.estimate_diameter(img)


@pytest.mark.slow
def test_missing_model_file_gives_a_clear_error(built, tmp_path):
    import shutil

    copy = tmp_path / "zoo"
    shutil.copytree(built[5], copy)
    (copy / "models/cluster1.pth").unlink()
    with pytest.raises(FileNotFoundError, match="cluster1"):
        ZooModel.load(copy, device="cpu")


def test_images_without_cells_are_left_out_or_rejected(tmp_path, base):
    images, labels, _ = two_style_data(n_per_style=1)
    empty = [np.zeros_like(lab) for lab in labels]
    one_epoch = ZooBuildConfig(epochs=1)
    with pytest.raises(ValueError, match="at least 2 images with cells"):
        run_build(images, [labels[0], empty[1]], tmp_path, base_model=base, config=one_epoch)
    with pytest.raises(ValueError, match="one label image per image"):
        run_build(images, labels[:1], tmp_path, base_model=base, config=one_epoch)


def test_build_config_checks_its_fields_and_is_read_only(tmp_path, base):
    config = ZooBuildConfig(channels=[2, 1], train_overrides={"bsize": 32})
    assert config.channels == (2, 1) and config.epochs == 100 and config.resolution == 0.45
    with pytest.raises(TypeError):
        config.train_overrides["bsize"] = 64
    with pytest.raises(ValueError, match="n_neighbors must be a positive integer"):
        ZooBuildConfig(n_neighbors=0)
    with pytest.raises(ValueError, match="resolution must be positive"):
        ZooBuildConfig(resolution=0.0)
    with pytest.raises(ValueError, match="channels must be two integers"):
        ZooBuildConfig(channels=(0, 0, 0))
    images, labels, _ = two_style_data(n_per_style=1)
    with pytest.raises(TypeError, match="config must be a ZooBuildConfig"):
        run_build(images, labels, tmp_path, base_model=base, config={"epochs": 1})


def test_balanced_indices_sample_clusters_equally():
    labels = np.array([0] * 7 + [1] * 2 + [2])
    idx = balanced_indices(labels, seed=1)
    assert np.bincount(labels[idx]).tolist() == [7, 7, 7]
    assert set(idx[labels[idx] == 1]) == {7, 8}


def write_folder(folder, images, labels):
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    for i, (img, lab) in enumerate(zip(images, labels)):
        tifffile.imwrite(folder / f"im{i}.tif", img)
        tifffile.imwrite(folder / f"im{i}_masks.tif", lab.astype(np.uint16))
    return folder


@pytest.mark.slow
def test_cli_route_and_eval(built, tmp_path, capsys):
    from cp2_engine.cli import main

    zoo, _, images, labels, truth, out = built
    test_dir = write_folder(tmp_path / "test", images[:2], labels[:2])
    assert (
        main(
            [
                "zoo",
                "route",
                str(test_dir / "im1.tif"),
                "--zoo",
                str(out),
                "--diameter",
                "24",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    expected = int(zoo.labels[truth == 1][0])
    assert f"cluster{expected}" in capsys.readouterr().out
    report = tmp_path / "report"
    assert (
        main(
            [
                "zoo",
                "eval",
                "--zoo",
                str(out),
                "--test",
                str(test_dir),
                "--out",
                str(report),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (report / "ap.png").is_file() and (report / "ap.csv").is_file()
    table = (report / "ap.md").read_text()
    assert "| all | 2 |" in table


def test_cli_reports_missing_inputs(tmp_path, capsys):
    from cp2_engine.cli import main

    assert main(["zoo", "route", str(tmp_path / "nope.tif"), "--zoo", str(tmp_path)]) == 2
    assert "zoo.json" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_build_shows_progress_and_writes_a_zoo(tmp_path, capsys):
    from cp2_engine.cli import main
    from cp2_engine.zoo import load_zoo

    images, labels, _ = two_style_data()
    data = write_folder(tmp_path / "data", images, labels)
    out = tmp_path / "zoo"
    argv = ["zoo", "build", str(data), "--out", str(out), "--base", "random"]
    argv += ["--neighbors", "1", "--epochs", "1", "--device", "cpu", "--no-generalist"]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert f"zoo written to {out}" in printed.out
    assert "cluster" in printed.err  # the progress bar's stage messages
    assert len(load_zoo(out).manifest.clusters) >= 1
