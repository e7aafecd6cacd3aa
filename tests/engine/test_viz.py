"""cp2_engine.viz pictures: the one flow colouring (shared by _seg.npy and the napari plugin),
mask outlines and overlays."""

from __future__ import annotations

import numpy as np
import pytest

from cp2_engine import io, util, viz


def test_flow_to_rgb_hue_is_direction_and_brightness_is_magnitude():
    dP = np.zeros((2, 1, 6), np.float32)
    dP[:, 0, 0] = (0, 1)  # +x
    dP[:, 0, 1] = (0, -1)  # -x
    dP[:, 0, 2] = (1, 0)  # +y
    dP[:, 0, 3] = (-1, 0)  # -y
    dP[:, 0, 4] = (0, 0.5)  # +x, half as long
    rgb = viz.flow_to_rgb(dP)[0].astype(int)
    assert rgb.shape == (6, 3) and viz.flow_to_rgb(dP).dtype == np.uint8
    assert rgb[5].tolist() == [0, 0, 0]  # no flow: black
    assert rgb[0].tolist() == [0, 255, 255]  # hue 0.5: cyan
    assert rgb[1].tolist() == [255, 0, 0]  # hue 0 (= 1): red
    assert len({tuple(c) for c in rgb[:4]}) == 4  # four directions, four colours
    assert rgb[4].max() == 128 and np.argmax(rgb[4][1:]) == np.argmax(rgb[0][1:])
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        viz.flow_to_rgb(np.zeros((3, 4, 4)))


def test_seg_npy_flows_rgb_is_flow_to_rgb(tmp_path, rng):
    masks = np.zeros((32, 40), np.uint16)
    masks[4:14, 5:17], masks[18:30, 20:36] = 1, 2
    dP = rng.normal(size=(2, *masks.shape)).astype(np.float32)
    prob = rng.normal(size=masks.shape).astype(np.float32)
    out = io.save_seg_npy(tmp_path / "a.tif", image=masks, masks=masks, flows=dP, cellprob=prob)
    flows = io.load_seg_npy(out)["flows"]
    np.testing.assert_array_equal(flows[0][0], viz.flow_to_rgb(dP))
    np.testing.assert_array_equal(flows[1][0], viz.scale_to_uint8(prob))


def test_moved_names_have_one_home():
    """No compatibility re-exports: atomic writes live in util, pictures in viz, not in io/zoo."""
    from cp2_engine import zoo

    for name in ("atomic_write", "atomic_write_file"):
        assert name in util.__all__ and name not in io.__all__
        with pytest.raises(AttributeError):
            getattr(io, name)
    for name in ("flow_to_rgb", "masks_outlines", "overlay_png"):
        assert name in viz.__all__ and name not in io.__all__
    assert "atomic_write_file" not in zoo.__all__


def test_overlay_png_refuses_bad_input(tmp_path):
    masks = np.zeros((6, 6), np.uint16)
    with pytest.raises(ValueError, match=r"\.png"):
        viz.overlay_png(tmp_path / "o.tif", np.zeros((6, 6)), masks)
    with pytest.raises(TypeError, match="integer"):
        viz.overlay_png(tmp_path / "o.png", np.zeros((6, 6)), masks.astype(float))
    with pytest.raises(ValueError, match="does not match"):
        viz.overlay_png(tmp_path / "o.png", np.zeros((5, 6)), masks)
    viz.overlay_png(tmp_path / "o.png", np.zeros((6, 6)), masks)
    with pytest.raises(FileExistsError):
        viz.overlay_png(tmp_path / "o.png", np.zeros((6, 6)), masks, overwrite=False)
