"""Round trips and safety checks of cp2_engine.io, all in tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
import roifile

from cp2_engine import io, util, viz


def _labels(rng: np.random.Generator, shape=(40, 48), n=6) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    m = np.zeros(shape, dtype=np.uint16)
    for k in range(1, n + 1):
        cy, cx = rng.integers(6, shape[0] - 6), rng.integers(6, shape[1] - 6)
        m[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(4, 25)] = k
    return m


@pytest.mark.parametrize(
    ("name", "dtype", "channels"),
    [
        ("a.tif", np.uint16, None),
        ("a.tiff", np.float32, None),
        ("a.png", np.uint8, 3),
        ("a.png", np.uint16, None),
        ("a.npy", np.int32, None),
        ("a.zarr", np.float64, 2),
    ],
)
def test_imwrite_imread_round_trip(tmp_path, rng, name, dtype, channels):
    shape = (17, 23) if channels is None else (17, 23, channels)
    arr = (rng.random(shape) * 200).astype(dtype)
    io.imwrite(tmp_path / name, arr)
    back = io.imread(tmp_path / name)
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp files left


def test_jpg_is_lossy_but_readable(tmp_path, rng):
    arr = np.full((16, 16), 100, dtype=np.uint8)
    io.imwrite(tmp_path / "a.jpg", arr)
    assert np.abs(io.imread(tmp_path / "a.jpg").astype(int) - 100).max() <= 2


def test_zarr_lazy_and_overwrite(tmp_path, rng):
    import zarr

    arr = rng.random((8, 9)).astype(np.float32)
    io.imwrite(tmp_path / "a.zarr", arr)
    lazy = io.imread(tmp_path / "a.zarr", lazy=True)
    assert isinstance(lazy, zarr.Array)
    np.testing.assert_array_equal(lazy[2:4], arr[2:4])
    io.imwrite(tmp_path / "a.zarr", arr * 2)
    np.testing.assert_array_equal(io.imread(tmp_path / "a.zarr"), arr * 2)
    with pytest.raises(FileExistsError):
        io.imwrite(tmp_path / "a.zarr", arr, overwrite=False)


def test_imread_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.imread(tmp_path / "missing.tif")
    (tmp_path / "a.bmp").touch()
    with pytest.raises(ValueError, match="unsupported"):
        io.imread(tmp_path / "a.bmp")
    np.save(tmp_path / "d_seg.npy", {"masks": np.zeros((2, 2))}, allow_pickle=True)
    with pytest.raises(ValueError, match="load_seg_npy"):
        io.imread(tmp_path / "d_seg.npy")
    with pytest.raises(ValueError, match="uint8 or uint16"):
        io.imwrite(tmp_path / "f.png", np.zeros((3, 3), np.float32))


def test_atomic_write_cleans_up_on_error(tmp_path):
    target = tmp_path / "a.npy"
    with pytest.raises(RuntimeError), util.atomic_write(target) as tmp:
        np.save(tmp, np.arange(3))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_save_masks_dtype_and_overwrite_refusal(tmp_path, rng):
    masks = _labels(rng)
    path = io.save_masks(tmp_path / "c_masks.tif", masks)
    np.testing.assert_array_equal(io.read_labels(path), masks)
    assert io.imread(path).dtype == np.uint16
    with pytest.raises(FileExistsError, match="overwrite=True"):
        io.save_masks(path, np.zeros_like(masks))
    np.testing.assert_array_equal(io.read_labels(path), masks)  # untouched
    io.save_masks(path, np.zeros_like(masks), overwrite=True)
    assert io.read_labels(path).max() == 0

    big = masks.astype(np.int64)
    big[big == 1] = 70000
    assert io.imread(io.save_masks(tmp_path / "big_masks.tif", big)).dtype == np.uint32
    with pytest.raises(ValueError, match="65535"):
        io.save_masks(tmp_path / "big_masks.png", big)
    with pytest.raises(ValueError, match="negative"):
        io.save_masks(tmp_path / "neg_masks.tif", -big)
    with pytest.raises(TypeError):
        io.save_masks(tmp_path / "f_masks.tif", masks.astype(float))
    with pytest.raises(ValueError, match="tif"):
        io.save_masks(tmp_path / "f_masks.jpg", masks)


def test_seg_npy_round_trip_and_keys(tmp_path, rng):
    masks = _labels(rng)
    masks[masks == 2] = 0  # a gap: must be renumbered for the GUI
    n = len(np.unique(masks)) - 1
    image = rng.random(masks.shape).astype(np.float32)
    dP = rng.normal(size=(2, *masks.shape)).astype(np.float32)
    prob = rng.normal(size=masks.shape).astype(np.float32)
    out = io.save_seg_npy(
        tmp_path / "cell.tif",
        image=image,
        masks=masks,
        flows=dP,
        cellprob=prob,
        diameter=17.0,
        model_path="models/x",
        ismanual=np.ones(n, bool),
    )
    assert out == tmp_path / "cell_seg.npy"
    dat = io.load_seg_npy(out)
    expected = {
        "outlines", "colors", "masks", "chan_choose", "filename", "flows", "ismanual",
        "manual_changes", "model_path", "flow_threshold", "cellprob_threshold", "diameter",
        "est_diam", "img",
    }  # fmt: skip
    assert expected <= set(dat)
    assert dat["masks"].max() == n and dat["masks"].dtype == np.uint16
    np.testing.assert_array_equal(dat["masks"] > 0, masks > 0)
    assert dat["filename"] == str(tmp_path / "cell.tif")
    assert dat["colors"].shape == (n, 3) and dat["ismanual"].all()
    assert np.all((dat["outlines"] == 0) | (dat["outlines"] == dat["masks"]))
    flows = dat["flows"]
    assert len(flows) == 5
    assert flows[0].shape == (1, *masks.shape, 3) and flows[0].dtype == np.uint8
    assert flows[1].shape == (1, *masks.shape) and flows[1].dtype == np.uint8
    np.testing.assert_array_equal(flows[4], np.concatenate([dP, prob[None]]))
    assert dat["diameter"] == 17.0 and dat["model_path"] == "models/x"
    np.testing.assert_array_equal(io.read_labels(out), dat["masks"])
    with pytest.raises(FileExistsError):
        io.save_seg_npy(out, image=image, masks=masks)


def test_seg_npy_errors(tmp_path, rng):
    masks = _labels(rng)
    image = np.zeros(masks.shape)
    with pytest.raises(ValueError, match="both"):
        io.save_seg_npy(tmp_path / "a.tif", image=image, masks=masks, cellprob=image)
    with pytest.raises(ValueError, match="ismanual"):
        io.save_seg_npy(tmp_path / "a.tif", image=image, masks=masks, ismanual=[True])
    with pytest.raises(ValueError, match="does not match"):
        io.save_seg_npy(tmp_path / "a.tif", image=np.zeros((3, 3)), masks=masks)
    np.save(tmp_path / "b_seg.npy", np.arange(3))
    with pytest.raises(ValueError, match="not a Cellpose"):
        io.load_seg_npy(tmp_path / "b_seg.npy")


def test_imagej_rois_count_and_position(tmp_path, rng):
    masks = _labels(rng, n=5)
    path = io.save_imagej_rois(tmp_path / "a_rois.zip", masks)
    rois = roifile.roiread(path)
    labels = np.unique(masks)[1:]
    assert len(rois) == len(labels)
    for roi, label in zip(rois, labels):
        ys, xs = np.nonzero(masks == label)
        left, top = roi.left, roi.top
        assert abs(left - xs.min()) <= 1 and abs(top - ys.min()) <= 1
    with pytest.raises(FileExistsError):
        io.save_imagej_rois(path, masks)
    with pytest.raises(ValueError, match="no labels"):
        io.save_imagej_rois(tmp_path / "e.zip", np.zeros((4, 4), np.uint8))


def test_overlay_png_draws_outlines(tmp_path, rng):
    masks = _labels(rng)
    image = rng.random((2, *masks.shape))  # channel-first two-channel image
    rgb = io.imread(viz.overlay_png(tmp_path / "o.png", image, masks, color=(0, 255, 0)))
    outline = viz.masks_outlines(masks) > 0
    assert rgb.shape == (*masks.shape, 3)
    assert np.all(rgb[outline] == [0, 255, 0])
    assert not np.all(rgb[~outline] == [0, 255, 0], axis=-1).all()


def test_find_image_label_pairs_layouts(tmp_path, rng):
    m = _labels(rng)
    for name in ("a.tif", "b_img.tif", "c.png", "lonely.tif"):
        io.imwrite(tmp_path / name, m.astype(np.uint8))
    io.save_masks(tmp_path / "a_masks.tif", m)
    io.save_seg_npy(tmp_path / "a.tif", image=m, masks=m)  # _masks wins over _seg.npy
    io.save_masks(tmp_path / "b_masks.tif", m)
    io.save_seg_npy(tmp_path / "c.png", image=m, masks=m)
    pairs = [(i.name, lab.name) for i, lab in io.find_image_label_pairs(tmp_path)]
    assert pairs == [
        ("a.tif", "a_masks.tif"),
        ("b_img.tif", "b_masks.tif"),
        ("c.png", "c_seg.npy"),
    ]
    with pytest.raises(FileNotFoundError):
        io.find_image_label_pairs(tmp_path / "nope")


def test_atomic_writes_give_files_the_usual_permissions(tmp_path):
    # mkstemp makes 0600 files: results must be as readable as files written with open()
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    expected = reference.stat().st_mode & 0o777
    assert expected != 0o600, "test needs a umask that differs from mkstemp's 0600"
    written = [util.atomic_write_file(tmp_path / "a.bin", lambda f: f.write(b"a"))]
    with util.atomic_write(tmp_path / "b.npy") as tmp:
        np.save(tmp, np.arange(3))
    written.append(tmp_path / "b.npy")
    for path in written:
        assert path.stat().st_mode & 0o777 == expected, path.name
