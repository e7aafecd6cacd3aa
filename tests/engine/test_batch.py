"""Batch segmentation (cp2_engine.batch): outputs, corrupt files, resume, summary, measurements."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cp2_engine import io
from cp2_engine.batch import iter_segment_batch
from cp2_engine.batch._run import SUMMARY_NAME
from cp2_engine.inference import Model, SegmentConfig
from cp2_engine.util import drain


@pytest.fixture(scope="module")
def model():
    return Model.random(seed=0)


def folder_of_images(tmp_path, n=3):
    rng = np.random.default_rng(0)
    for i in range(n):
        io.imwrite(tmp_path / f"img{i}.tif", (rng.random((64, 64)) * 255).astype(np.uint8))
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    return tmp_path


def run(images, model, **kw):
    events = []
    kw.setdefault("config", SegmentConfig(diameter=30.0, cellprob_threshold=-2.0))
    gen = iter_segment_batch(images, model="random", segmenter=model, **kw)
    result = drain(gen, events.append)
    return result, events


def test_folder_batch_reports_the_corrupt_file_and_resumes(tmp_path, model):
    folder = folder_of_images(tmp_path)
    result, events = run([folder], model, roi_formats=("geojson",), measure=True)
    assert [e.done for e in events] == [0, 1, 2, 3, 4] and events[-1].total == 4
    status = {r.image: r.status for r in result.rows}
    assert status == {"broken.tif": "failed", "img0.tif": "segmented", "img1.tif": "segmented",
                      "img2.tif": "segmented"}  # fmt: skip
    assert "broken.tif" in result.summary.read_text()
    for i in range(3):
        for suffix in ("_cp_masks.tif", "_seg.npy", "_cp_overlay.png", ".geojson"):
            assert (folder / f"img{i}{suffix}").exists()
    rows = list(csv.DictReader(result.summary.open()))
    assert [r["status"] for r in rows] == ["failed", "segmented", "segmented", "segmented"]
    assert rows[0]["error"].startswith(("TiffFileError", "ValueError", "OSError"))
    assert events[-1].eta == 0.0
    # rerun: every finished image is skipped, the broken one is reported again
    again, _ = run([folder], model, roi_formats=("geojson",), measure=True)
    assert again.counts == {"segmented": 0, "skipped": 3, "failed": 1}
    assert again.measurements.read_text() == result.measurements.read_text()
    # other settings: the images are segmented again (their own outputs are replaced)
    other, _ = run([folder], model, roi_formats=("geojson",), config=SegmentConfig(diameter=20))
    assert other.counts["segmented"] == 3
    # a changed image is segmented again
    io.imwrite(folder / "img1.tif", np.zeros((64, 64), np.uint8))
    changed, _ = run([folder], model, roi_formats=("geojson",), config=SegmentConfig(diameter=20))
    assert {r.image for r in changed.rows if r.status == "segmented"} == {"img1.tif"}


def test_measurements_table_matches_the_masks(tmp_path, model):
    images = [(f"frame{t}", np.random.default_rng(t).random((64, 64))) for t in range(2)]
    result, _ = run(images, model, out=tmp_path / "out", measure=True)
    table = list(csv.DictReader(result.measurements.open()))
    for name in ("frame0", "frame1"):
        masks = io.read_labels(tmp_path / "out" / f"{name}_cp_masks.tif")
        rows = [r for r in table if r["image"] == name]
        assert len(rows) == len(np.unique(masks)) - 1
        for r in rows:
            assert int(r["area_px"]) == int((masks == int(r["label"])).sum())
    assert (tmp_path / "out" / SUMMARY_NAME).exists()


def test_never_clobbers_outputs_it_did_not_write(tmp_path, model):
    folder = folder_of_images(tmp_path, n=1)
    (folder / "broken.tif").unlink()
    io.save_masks(folder / "img0_cp_masks.tif", np.ones((64, 64), np.uint16))
    result, _ = run([folder], model)
    assert result.rows[0].status == "failed" and "no cp2 batch wrote" in result.rows[0].error
    assert io.read_labels(folder / "img0_cp_masks.tif").all()
    result, _ = run([folder], model, overwrite=True)
    assert result.rows[0].status == "segmented"
    with pytest.raises(ValueError, match="output folder"):
        drain(iter_segment_batch([("a", np.zeros((8, 8)))], model="random", segmenter=model))
