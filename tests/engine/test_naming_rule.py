"""One image/label naming rule (cp2_engine.io): training, the demo, ``cp2 measure`` and the
pairing helpers pair the same files of the same folder."""

from __future__ import annotations

import numpy as np
import pytest

from cp2_engine import io
from cp2_engine.demo import find_samples
from cp2_engine.synthetic import touching_cells
from cp2_engine.training import load_folder


@pytest.fixture
def folder(tmp_path):
    """Images in every layout the rule knows, with distinct labels per image."""
    made = {}
    for i, name in enumerate(("a", "b_img", "c", "d", "e", "f_img", "g")):
        s = touching_cells((48, 48), n_cells=3 + i, diameter=12, seed=i)
        ext = ".png" if name == "c" else ".tif"
        image = (255 * s.image / s.image.max()).astype(np.uint8)
        io.imwrite(tmp_path / f"{name}{ext}", image)
        made[name] = s.labels.astype(np.uint16)
    io.save_masks(tmp_path / "a_masks.tif", made["a"])
    io.save_masks(tmp_path / "b_masks.tif", made["b_img"])  # <id>_img.tif + <id>_masks.tif
    io.save_seg_npy(tmp_path / "c_seg.npy", image=np.zeros((48, 48), np.float32),
                    masks=made["c"])  # fmt: skip
    io.save_masks(tmp_path / "d_cp_masks.tif", made["d"])  # a prediction only
    io.save_masks(tmp_path / "f_img_masks.tif", made["f_img"])  # Cellpose's own naming
    io.save_masks(tmp_path / "g_labels.tif", made["g"])  # a custom suffix (--mask-filter)
    io.imwrite(tmp_path / "a_flows.tif", np.zeros((48, 48), np.float32))  # derived: no image
    return tmp_path, made


def test_training_and_io_pair_the_same_files(folder):
    tmp, made = folder
    pairs = io.find_image_label_pairs(tmp, kinds=("_masks", "_seg"))
    truth = {io.image_base(i): m.name for i, m in pairs}
    assert truth == {"a": "a_masks.tif", "b": "b_masks.tif", "c": "c_seg.npy",
                     "f": "f_img_masks.tif"}  # fmt: skip
    data = load_folder(tmp, require_labels=False)
    assert data.names == sorted(truth)
    for name, labels in zip(data.names, data.labels, strict=True):
        original = made[name if name in made else f"{name}_img"]
        assert labels.max() == original.max()  # the labels of that very image
    with pytest.raises(FileNotFoundError, match=r"no labels for d\.tif: expected d_masks"):
        load_folder(tmp)  # predicted _cp_masks are never training labels
    every = {io.image_base(i): m.name for i, m in io.find_image_label_pairs(tmp)}
    assert every["d"] == "d_cp_masks.tif" and "e" not in every


def test_a_custom_mask_suffix_is_the_masks_kind_everywhere(folder):
    tmp, _ = folder
    assert io.find_label_files(tmp, kinds=("_masks",), mask_filter="_labels") == {
        "g": tmp / "g_labels.tif"
    }
    assert "g_labels" not in {io.image_base(p) for p in io.find_images(tmp, mask_filter="_labels")}
    assert load_folder(tmp, mask_filter="_labels", require_labels=False).names == ["c", "g"]


def test_the_demo_and_cp2_measure_follow_the_rule(folder):
    from cp2_engine.cli import main

    tmp, _ = folder
    assert [name for name, _, _ in find_samples(tmp)] == ["a", "b", "f"]  # _masks labels only
    (tmp / "out").mkdir()
    out = tmp / "out" / "table.csv"
    for name in ("e.tif", "g.tif", "g_labels.tif"):  # no labels by the default rule
        (tmp / name).unlink()
    assert main(["measure", str(tmp), "--out", str(out), "--no-intensity"]) == 0
    rows = out.read_text().splitlines()
    assert {r.split(",")[0] for r in rows[1:]} >= {"a.tif", "b_img.tif", "c.png", "f_img.tif"}
