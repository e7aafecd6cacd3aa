"""Tests of the demo pipeline and the ``cp2 demo`` command (quick mode)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cp2_engine.cli import main
from cp2_engine.demo import DemoSettings, find_samples, iter_demo, model_for_sample, run_demo
from cp2_engine.demo._report import to_html, to_markdown
from cp2_engine.demo._samples import MANIFEST, prepare_out_dir
from cp2_engine.io import load_seg_npy
from cp2_engine.synthetic import touching_cells
from cp2_engine.viz import overlay_rgb

# Quick mode on one small synthetic sample: the whole pipeline (bundled models, HitlProject with
# 64-px images and one epoch per round, report) in seconds.
_TINY = DemoSettings.quick()


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    cells = touching_cells((96, 96), diameter=24, seed=4, style="phase")
    tifffile.imwrite(folder / "synthetic_cells.tif", cells.image)
    tifffile.imwrite(folder / "synthetic_cells_masks.tif", cells.labels)
    tifffile.imwrite(folder / "unlabelled.tif", cells.image)
    return folder, cells


@pytest.fixture(scope="module")
def tiny_run(samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    events = []
    gen = iter_demo(out, sample_dir=samples[0], quick=True)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return out, events, stop.value


def test_demo_writes_every_file(tiny_run, samples):
    out, _, result = tiny_run
    (image,) = result.images
    assert image.name == "synthetic_cells" and image.model == "cp2_cyto"
    assert image.n_true == samples[1].labels.max()
    seg_dir = out / "segmentation"
    masks = tifffile.imread(seg_dir / "synthetic_cells_cp_masks.tif")
    assert masks.shape == samples[1].labels.shape and masks.max() == image.n_pred
    seg = load_seg_npy(seg_dir / "synthetic_cells_seg.npy")
    assert np.array_equal(seg["masks"], masks)
    assert (seg_dir / "synthetic_cells_overlay.png").is_file()
    from cp2_engine.metrics import average_precision  # the report's AP: recomputed here

    expected = average_precision(samples[1].labels, masks).ap[0]
    np.testing.assert_allclose(image.ap, expected)
    assert image.ap[0] >= 0.8  # cp2_cyto on the synthetic sample finds most cells
    assert (out / MANIFEST).is_file()
    names = {p.name for p in result.figures}
    assert names == {"overlays.png", "hitl_ap.png", "hitl_rois.png", "hitl_loss.png",
                     "hitl_examples.png"}  # fmt: skip
    assert all(p.is_file() and p.stat().st_size > 1000 for p in result.figures)
    md = result.report_md.read_text()
    page = result.report_html.read_text()
    for fig in names:
        assert f"figures/{fig}" in md and f'src="figures/{fig}"' in page
    assert "synthetic_cells" in md and "napari" in md and "<table>" in page


def test_hitl_numbers_have_the_right_shape(tiny_run):
    _, _, result = tiny_run
    assert [run.init for run in result.hitl] == ["pretrained", "scratch"]
    for run in result.hitl:
        assert [r.round for r in run.rounds] == list(range(_TINY.n_rounds + 1))
        assert run.rounds[0].image is None and run.rounds[0].n_drawn == 0
        for r in run.rounds[1:]:
            assert r.n_true > 0 and 0 <= r.n_human <= r.n_true
            assert r.n_human == r.n_drawn + r.n_fixed  # missed + redrawn: the human effort
            # every true ROI is kept, fixed or drawn (a drawn one may be hidden by a kept one)
            assert 1 <= r.n_kept + r.n_human <= r.n_true
            assert len(r.losses) == _TINY.n_epochs and np.isfinite(r.losses).all()
            assert 0.0 <= r.ap75 <= r.ap50 <= 1.0
        # the project on disk agrees: one accepted image and one model per round
        assert len(list((run.project / "corrected").glob("*_masks.tif"))) == _TINY.n_rounds
        assert len(list((run.project / "models").glob("round_???"))) == _TINY.n_rounds
        assert not list((run.project / "models").glob("*.ckpt"))  # resume files removed
        assert len(run.example_masks) == 2
    pretrained, scratch = result.hitl
    assert pretrained.rounds[0].ap50 >= 0.5  # the bundled model before any round
    assert scratch.rounds[0].ap50 < pretrained.rounds[0].ap50  # random weights find less


def test_events_count_up_to_the_total(tiny_run):
    _, events, _ = tiny_run
    steps = [e.done for e in events]
    assert steps == sorted(steps) and steps[-1] == events[-1].total
    assert events[-1].total == 1 + 2 * (_TINY.n_rounds + 1) + 1
    assert any("epoch" in e.message for e in events)


def test_cli_quick_rerun_replaces_an_earlier_demo_output(tiny_run, samples, capsys):
    out, _, first = tiny_run
    argv = ["demo", "--quick", "--out", str(out), "--sample-dir", str(samples[0]), "--seed", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "synthetic_cells" in printed and "AP@0.5" in printed and "pretrained" in printed
    assert "napari" in printed and str(first.report_html) in printed
    assert '"seed": 1' in (out / MANIFEST).read_text()
    for run in first.hitl:  # the earlier HITL projects were replaced, not appended to
        assert len(list((run.project / "models").glob("round_???"))) == _TINY.n_rounds


def test_refuses_a_foreign_non_empty_folder(tmp_path, samples):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a cp2 demo output"):
        run_demo(out, sample_dir=samples[0], settings=_TINY)
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (out / "demo_summary.md").write_text("# cp2 demo summary")  # old demo + a user file
    with pytest.raises(FileExistsError, match="not a cp2 demo output"):
        prepare_out_dir(out)
    old = tmp_path / "old_demo"  # what the earlier round-trip demo wrote is replaced
    old.mkdir()
    (old / "demo_summary.md").write_text("# cp2 demo summary")
    (old / "a_roundtrip_overlay.png").write_bytes(b"png")
    assert prepare_out_dir(old) == old
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        prepare_out_dir(tmp_path / "file")


def test_missing_sample_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="sample data folder not found"):
        run_demo(tmp_path / "out", sample_dir=tmp_path / "missing", settings=_TINY)
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="pairs"):
        find_samples(tmp_path)


def test_cli_reports_errors(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "data.tif").write_bytes(b"user data")
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert "not a cp2 demo output" in capsys.readouterr().err
    missing = tmp_path / "nothing"
    assert main(["demo", "--out", str(tmp_path / "o"), "--sample-dir", str(missing)]) == 2
    assert "not found" in capsys.readouterr().err


def test_settings_validation():
    with pytest.raises(ValueError, match="n_rounds"):
        DemoSettings(n_rounds=0)
    with pytest.raises(ValueError, match="multiple of 16"):
        DemoSettings(bsize=100)
    assert DemoSettings().train_config().n_epochs == DemoSettings().n_epochs
    assert DemoSettings().train_config().mode == "online"


def test_model_for_sample():
    assert model_for_sample("dsb2018_tissue_rgb") == "cp2_nuclei"
    assert model_for_sample("usiigaci_x") == model_for_sample("other") == "cp2_cyto"


def test_report_renderers_escape_and_agree():
    blocks = [("h1", "A <b>"), ("p", "use `cp2 demo` | x"), ("table", ("a", "b"), [(1, "x|y")]),
              ("img", "figures/f.png", "fig"), ("code", "napari x")]  # fmt: skip
    md, page = to_markdown(blocks), to_html(blocks)
    assert "# A <b>" in md and "x\\|y" in md and "![fig](figures/f.png)" in md
    assert "<h1>A &lt;b&gt;</h1>" in page and "<code>cp2 demo</code>" in page
    assert "<td>x|y</td>" in page and "<pre><code>napari x</code></pre>" in page


def test_overlay_marks_outlines(rng):
    labels = np.zeros((30, 30), np.uint16)
    labels[5:15, 5:15] = 1
    rgb = overlay_rgb(rng.random((30, 30)), labels, labels)
    assert rgb.shape == (30, 30, 3) and rgb.dtype == np.uint8
    assert (rgb[5, 5:15] == (0, 255, 0)).all()  # inner outline of the true mask
    assert (rgb[4, 6:14] == (255, 0, 255)).all()  # outer outline of the predicted mask
