"""Tests of cp2_engine.zoo._store: round trip, missing files, malformed manifests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cp2_engine.util import atomic_write_file
from cp2_engine.zoo import ZooCluster, ZooManifest, load_zoo, save_zoo
from cp2_engine.zoo._store import MANIFEST_NAME


def make_zoo(folder, rng, *, with_models=True):
    clusters = tuple(
        ZooCluster(
            id=i,
            name=f"c{i}",
            model=f"models/c{i}.pth",
            diam_mean=30.0,
            diam_labels=20.0 + i,
            n_images=3,
        )
        for i in range(2)
    )
    manifest = ZooManifest(
        clusters=clusters,
        generalist="models/generalist.pth",
        base_model="cyto2",
        n_neighbors=7,
        resolution=0.3,
        seed=4,
    )
    styles = rng.normal(size=(6, 8)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1])
    if with_models:
        (folder / "models").mkdir(parents=True)
        for rel in ["models/c0.pth", "models/c1.pth", "models/generalist.pth"]:
            (folder / rel).write_bytes(b"weights")
    save_zoo(folder, manifest, styles=styles, labels=labels)
    return manifest, styles, labels


def test_zoo_round_trip(tmp_path):
    manifest, styles, labels = make_zoo(tmp_path, np.random.default_rng(0))
    zoo = load_zoo(tmp_path)
    assert zoo.manifest == manifest
    np.testing.assert_array_equal(zoo.styles, styles)
    np.testing.assert_array_equal(zoo.labels, labels)
    assert zoo.model_path(1) == tmp_path / "models/c1.pth"
    assert zoo.model_path(None) == tmp_path / "models/generalist.pth"
    assert not list(tmp_path.glob(".*tmp"))


def test_missing_model_file_is_named(tmp_path):
    make_zoo(tmp_path, np.random.default_rng(1))
    (tmp_path / "models/c1.pth").unlink()
    with pytest.raises(FileNotFoundError, match=r"c1\.pth"):
        load_zoo(tmp_path)
    assert load_zoo(tmp_path, check_models=False).manifest.cluster(1).name == "c1"


def test_not_a_zoo_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=MANIFEST_NAME):
        load_zoo(tmp_path)


def test_missing_styles_file_is_named(tmp_path):
    make_zoo(tmp_path, np.random.default_rng(2))
    (tmp_path / "styles.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"styles\.npy"):
        load_zoo(tmp_path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(version=99), "version"),
        (lambda d: d["clusters"][0].pop("model"), "malformed"),
        (lambda d: d["clusters"].pop(), r"clusters \[1\]"),
    ],
)
def test_bad_manifest_raises(tmp_path, edit, match):
    make_zoo(tmp_path, np.random.default_rng(3))
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    edit(data)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        load_zoo(tmp_path)


def test_save_zoo_rejects_mismatched_arrays(tmp_path):
    with pytest.raises(ValueError, match="labels"):
        save_zoo(tmp_path, ZooManifest(clusters=()), styles=np.eye(3), labels=[0, 1])


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def failing(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_file(path, failing)
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]
