"""End-to-end tests of ``cp2 eval`` on small label folders in tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cp2_engine import io
from cp2_engine.cli import main
from cp2_engine.metrics import average_precision


def _disks(rng: np.random.Generator, shape=(48, 48), n=6, jitter=0) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    m = np.zeros(shape, dtype=np.uint16)
    centres = [(10, 10), (10, 30), (30, 10), (30, 34), (20, 20), (40, 40)][:n]
    for k, (cy, cx) in enumerate(centres, start=1):
        dy, dx = rng.integers(-jitter, jitter + 1, size=2)
        m[(yy - cy - dy) ** 2 + (xx - cx - dx) ** 2 <= 16] = k
    return m


@pytest.fixture
def folders(tmp_path, rng):
    true_dir, pred_dir = tmp_path / "true", tmp_path / "pred"
    true_dir.mkdir()
    pred_dir.mkdir()
    trues, preds = [], []
    for i, name in enumerate(["a", "b", "c"]):
        true = _disks(rng)
        pred = _disks(rng, jitter=i)  # a: perfect; b, c: shifted
        pred[pred == 2] = 0  # one missed cell in every image
        io.imwrite(true_dir / f"{name}_img.tif", true.astype(np.uint8))
        io.save_masks(true_dir / f"{name}_masks.tif", true)
        if name == "c":
            io.save_seg_npy(pred_dir / "c.tif", image=pred, masks=pred)
        else:
            io.save_masks(pred_dir / f"{name}_cp_masks.png", pred * 7)  # gapped labels
        trues.append(true)
        preds.append(pred)
    return true_dir, pred_dir, trues, preds


def test_eval_prints_table_and_writes_json_and_plot(folders, tmp_path, capsys):
    true_dir, pred_dir, trues, preds = folders
    out_json, out_png = tmp_path / "ap.json", tmp_path / "ap.png"
    argv = ["eval", "--true", str(true_dir), "--pred", str(pred_dir), "--thresholds", "0.5", "0.8"]
    rc = main([*argv, "--json", str(out_json), "--plot", str(out_png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "AP@0.50" in text and "AP@0.80" in text and "mean (3 images)" in text
    expected = average_precision(trues, preds, thresholds=(0.5, 0.8))
    report = json.loads(out_json.read_text())
    assert [img["name"] for img in report["images"]] == ["a", "b", "c"]
    np.testing.assert_allclose([img["ap"] for img in report["images"]], expected.ap)
    assert [img["tp"] for img in report["images"]] == expected.tp.tolist()
    assert [img["fn"] for img in report["images"]] == expected.fn.tolist()
    np.testing.assert_allclose(report["mean_ap"], expected.mean_ap)
    assert report["images"][0]["fn"] == [1, 1]  # the removed cell
    assert len(report["curve"]["thresholds"]) == 10
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_folder_uses_cp_masks_as_prediction(tmp_path, rng, capsys):
    true = _disks(rng)
    io.save_masks(tmp_path / "x_masks.tif", true)
    pred = true.copy()
    pred[pred == 1] = 0
    io.save_masks(tmp_path / "x_cp_masks.tif", pred)
    out = tmp_path / "r.json"
    assert (
        main(["eval", "--true", str(tmp_path), "--pred", str(tmp_path), "--json", str(out)]) == 0
    )
    assert json.loads(out.read_text())["images"][0]["fn"] == [1, 1, 1]


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    rc = main(["eval", "--true", str(tmp_path / "t"), "--pred", str(tmp_path / "p")])
    assert rc == 2
    assert "no label files in" in capsys.readouterr().err


def test_file_without_partner_is_a_clear_error(folders, capsys):
    true_dir, pred_dir, _, _ = folders
    (pred_dir / "b_cp_masks.png").unlink()
    rc = main(["eval", "--true", str(true_dir), "--pred", str(pred_dir)])
    assert rc == 2
    assert "no prediction for 1 file(s): b_masks.tif" in capsys.readouterr().err


def test_shape_mismatch_names_the_files(folders, capsys):
    true_dir, pred_dir, _, _ = folders
    io.save_masks(pred_dir / "a_cp_masks.png", np.zeros((5, 5), np.uint16), overwrite=True)
    rc = main(["eval", "--true", str(true_dir), "--pred", str(pred_dir)])
    assert rc == 2
    assert "a_cp_masks.png" in capsys.readouterr().err
