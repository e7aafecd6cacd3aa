"""The plugin's reader and writers follow cp2's one image/label naming rule (cp2_engine.io)."""

from __future__ import annotations

import numpy as np

from cp2_engine import io


def test_reader_and_writers_use_the_naming_rule(tmp_path):
    from napari_cp2._io import get_reader, read_cellpose, write_masks_tif, write_seg_npy

    labels = np.zeros((16, 16), np.uint16)
    labels[2:8, 2:8] = 1
    path = tmp_path / "x_img_masks.tif"
    io.save_masks(path, labels)
    assert get_reader(str(path)) is read_cellpose
    [(data, meta, kind)] = read_cellpose(str(path))
    assert kind == "labels" and np.array_equal(data, labels)
    assert meta["metadata"]["cp2_image"] == "x_img"  # the image layer of x_img.tif
    assert get_reader("a_cp_masks.tif") is read_cellpose and get_reader("a_seg.npy") is not None
    assert get_reader("a.tif") is None and get_reader("a_flows.tif") is None
    assert write_masks_tif(str(tmp_path / "y.tif"), labels, {}) == [str(tmp_path / "y_masks.tif")]
    assert write_seg_npy(str(tmp_path / "y"), labels, {}) == [str(tmp_path / "y_seg.npy")]
    assert io.find_label_files(tmp_path) == {
        "x": path, "y": tmp_path / "y_masks.tif"
    }  # fmt: skip
