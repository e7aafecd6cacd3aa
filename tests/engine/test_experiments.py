"""The paper's experiments: settings, data, summaries, the cost-aware ranking, and tiny
end-to-end runs of both experiments through `cp2 experiment` (resume, report-only, shared
offline points, both annotator thresholds)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cp2_engine.hitl import ExperimentSettings, split_data, synthetic_data, write_results
from cp2_engine.hitl._cost import _expected_counts
from cp2_engine.hitl._experiment_results import summarise_hitl


def _hitl_rows():
    rows = []
    for strategy, rois, aps in (
        ("pretrained_online_random", (0, 10, 25), (0.5, 0.78, 0.85)),
        ("scratch_online", (0, 40, 90), (0.0, 0.5, 0.7)),
        ("pretrained_offline", (60, 120), (0.7, 0.8)),
        ("scratch_offline", (60, 120), (0.6, 0.9)),
    ):
        for step, (r, ap) in enumerate(zip(rois, aps)):
            rows.append({"strategy": strategy, "step": step, "human_rois": r, "ap50": ap,
                         "ap75": ap / 2, "drawn": r, "fixed": 0, "n_images": step})  # fmt: skip
    return rows


def test_summary_counts_rois_to_the_targets():
    s = summarise_hitl(_hitl_rows())
    assert s["best_offline"] == 0.9
    assert s["targets"]["95"] == pytest.approx(0.855) and s["targets"]["90"] == pytest.approx(0.81)
    online = s["strategies"]["pretrained_online_random"]
    assert (online["rois_to_95"], online["rois_to_90"]) == (None, 25)
    assert (online["best"], online["rois_at_best"], online["final"]) == (0.85, 25, 0.85)
    assert s["strategies"]["scratch_offline"]["rois_to_95"] == 120
    assert s["strategies"]["scratch_online"]["rois_to_90"] is None


def test_write_results_round_trip(tmp_path):
    rows = _hitl_rows()
    paths = write_results(rows, tmp_path, name="hitl-vs-offline", stem="h", meta={"x": 1})
    assert [p.name for p in paths] == ["h.csv", "h.json", "h.png", "h.md"]
    with paths[0].open() as fh:
        back = list(csv.DictReader(fh))
    assert len(back) == len(rows) and float(back[5]["ap50"]) == pytest.approx(rows[5]["ap50"])
    record = json.loads(paths[1].read_text())
    assert record["rows"] == rows and record["meta"] == {"x": 1}
    assert record["summary"]["ap50"]["strategies"]["scratch_offline"]["rois_to_95"] == 120
    assert paths[2].read_bytes()[:4] == b"\x89PNG"
    table = paths[3].read_text().splitlines()
    assert table[2].startswith("| pretrained_online_random | not reached | 25 |")
    with pytest.raises(ValueError, match="name must be one of"):
        write_results(rows, tmp_path, name="nope")
    with pytest.raises(ValueError, match="no result rows"):
        write_results([], tmp_path, name="learning-curve")


def test_settings_are_the_paper_s_and_checked():
    full = ExperimentSettings()
    assert (full.n_epochs_online, full.n_epochs_offline, full.bsize, full.batch_size) == (
        100, 300, 224, 8)  # fmt: skip
    assert full.subset_sizes == (1, 2, 4, 8, 16) and full.n_seeds == 3 and full.keep_iou == 0.75
    offline = full.train_config("offline").resolved(pretrained=True)
    assert (offline.learning_rate, offline.min_images_per_epoch) == (0.1, 8)
    with pytest.raises(ValueError, match="n_rounds"):
        ExperimentSettings.quick(n_rounds=0)
    with pytest.raises(ValueError, match="strategies"):
        ExperimentSettings(strategies=("nope",))
    with pytest.raises(ValueError, match="keep_iou"):
        ExperimentSettings(keep_iou=0.3)


def test_synthetic_data_is_seeded():
    a = synthetic_data(n_train=2, n_test=1, shape=(64, 64), seed=3)
    b = synthetic_data(n_train=2, n_test=1, shape=(64, 64), seed=3)
    assert (a.train_labels[1] == b.train_labels[1]).all()
    assert a.names() == ["image_000", "image_001"]


def test_split_data_resizes_to_one_diameter_in_a_seeded_order(tmp_path):
    import tifffile

    train = tmp_path / "ds" / "train"
    train.mkdir(parents=True)
    rows = []
    for i in range(4):
        lab = np.zeros((40, 60), np.uint16)
        lab[5:15, 5:15] = 1
        lab[20:30, 30:40] = 2
        tifffile.imwrite(train / f"im{i}_img.tif", (lab * 50 + i).astype(np.uint8)[..., None]
                         .repeat(3, axis=2))  # fmt: skip
        tifffile.imwrite(train / f"im{i}_masks.tif", lab)
        rows.append(f"im{i},rgb,11.28")
    for name, part in (("pool.csv", rows[:3]), ("test.csv", rows[3:])):
        (tmp_path / name).write_text("id,type,median_diameter_px\n" + "\n".join(part) + "\n")
    d = split_data(tmp_path / "ds", pool_split=tmp_path / "pool.csv",
                   test_split=tmp_path / "test.csv", diameter=22.56, seed=1)  # fmt: skip
    again = split_data(tmp_path / "ds", pool_split=tmp_path / "pool.csv",
                       test_split=tmp_path / "test.csv", diameter=22.56, seed=1)  # fmt: skip
    assert sorted(d.train_names) == ["im0", "im1", "im2"] and d.train_names == again.train_names
    assert d.test_names == ("im3",)
    assert d.train_images[0].shape == (80, 120) and d.train_images[0].ndim == 2  # RGB -> grey
    assert d.train_labels[0].max() == 2 and np.count_nonzero(d.train_labels[0] == 1) == 400


def test_expected_cost_counts():
    masks = np.zeros((20, 40), np.int32)
    masks[0:6, 0:6] = 1  # consistent under the flip: kept
    masks[0:6, 10:16] = 2  # flip-IoU 24/36 = 0.67: expected fixed at 0.75, kept at 0.5
    masks[10:16, 0:6] = 3  # no counterpart in the flipped view: expected fixed
    back = np.zeros_like(masks)
    back[0:6, 0:6] = 1
    back[0:6, 10:14] = 2
    back[10:16, 20:26] = 5  # found only in the flipped view: expected missed
    cellprob = np.full(masks.shape, -5.0)
    cellprob[12:18, 30:36] = 5.0  # 36 uncovered foreground pixels = one mask area: missed
    assert _expected_counts(masks, back, cellprob, 0.0, 0.75) == (2, 2)
    assert _expected_counts(masks, back, cellprob, 0.0, 0.5) == (1, 2)


_TINY = ["--quick", "--epochs-online", "1", "--epochs-offline", "1", "--pretrain-epochs", "1",
         "--n-train", "2", "--n-test", "1", "--bsize", "32", "--batch-size", "2"]  # fmt: skip


@pytest.mark.slow
def test_cli_hitl_vs_offline_resumes_and_reports(tmp_path):
    from cp2_engine.cli import main

    out = tmp_path / "exp"
    argv = ["experiment", "hitl-vs-offline", *_TINY, "--rounds", "1", "--offline-n", "1",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "hitl-vs-offline_keep0.75.json").read_text())
    rows = record["rows"]
    assert {r["strategy"] for r in rows} == {"pretrained_online_random", "pretrained_offline",
                                             "scratch_offline", "pretrained_online_active",
                                             "scratch_online"}  # fmt: skip
    offline = [r for r in rows if r["strategy"].endswith("_offline")]
    n_true = offline[0]["human_rois"]
    assert n_true > 0 and all(r["drawn"] == n_true and r["fixed"] == 0 for r in offline)
    online = [r for r in rows if "online" in r["strategy"] and r["step"] == 1]
    assert len(online) == 3
    assert all(r["human_rois"] == r["drawn"] + r["fixed"] for r in online)
    starts = {r["ap50"] for r in rows if r["step"] == 0 and r["strategy"].startswith("pre")}
    assert len(starts) == 1  # one pretrained start, evaluated once
    assert (out / "hitl-vs-offline_keep0.75.md").read_text().startswith("| strategy |")
    # the same command again trains nothing (every point is journalled), same rows
    n_files = len(list((out / "journal").glob("*.json")))
    assert main([*argv, "--report-only"]) == 0
    assert json.loads((out / "hitl-vs-offline_keep0.75.json").read_text())["rows"] == rows
    assert len(list((out / "journal").glob("*.json"))) == n_files
    # a call that trains one strategy writes results with every finished point: running the
    # strategies one at a time used to leave tables and figures with the last one alone
    assert main([*argv, "--strategies", "scratch_offline"]) == 0
    record = json.loads((out / "hitl-vs-offline_keep0.75.json").read_text())
    assert record["rows"] == rows and "--strategies" not in record["meta"]["command"]
    # the lenient annotator: its own online points and outputs; offline points are shared
    assert main([*argv, "--keep-iou", "0.5", "--strategies", "pretrained_offline"]) == 0
    lenient = json.loads((out / "hitl-vs-offline_keep0.5.json").read_text())["rows"]
    offline = [r for r in rows if r["strategy"] == "pretrained_offline"]
    assert [r for r in lenient if r["strategy"] == "pretrained_offline"] == offline
    assert {r["step"] for r in lenient if "online" in r["strategy"]} == {0}  # start points only
    # --restart discards the journal once, before training, not again before writing results
    assert main([*argv, "--restart", "--strategies", "scratch_offline"]) == 0
    after = json.loads((out / "hitl-vs-offline_keep0.75.json").read_text())["rows"]
    assert {r["strategy"] for r in after} == {"scratch_offline"}


@pytest.mark.slow
def test_cli_learning_curve_shares_the_offline_points(tmp_path):
    from cp2_engine.cli import main

    out = tmp_path / "exp"
    hitl = ["experiment", "hitl-vs-offline", *_TINY, "--rounds", "1", "--offline-n", "1",
            "--strategies", "scratch_offline", "--out", str(out)]  # fmt: skip
    assert main(hitl) == 0
    point = json.loads((out / "hitl-vs-offline_keep0.75.json").read_text())["rows"][0]
    argv = ["experiment", "learning-curve", *_TINY, "--sizes", "1", "2", "--seeds", "2",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "learning-curve.json").read_text())["rows"]
    assert sorted((r["init"], r["size"], r["seed"]) for r in rows) == [
        (i, s, k) for i in ("pretrained", "scratch") for s in (1, 2) for k in (0, 1)]  # fmt: skip
    first = next(r for r in rows if (r["init"], r["size"], r["seed"]) == ("scratch", 1, 0))
    assert first["images"] == ["image_000"] and first["n_rois"] == point["human_rois"]
    # the same journalled point, not trained again (same timing); with a pool of 2 images both
    # subsets of size 2 are the whole pool: one point. So 3 points per start, not 4
    assert first["train_seconds"] == point["train_seconds"]
    assert len(list((out / "journal").glob("offline-scratch-*.json"))) == 3
    assert len(list((out / "journal").glob("offline-pretrained-*.json"))) == 3
    assert all(r["n_rois"] > 0 and r["n_images"] == r["size"] for r in rows)
    assert (out / "learning-curve.png").read_bytes()[:4] == b"\x89PNG"


def test_project_cost_ranking(tmp_path):
    from cp2_engine.hitl import HitlProject
    from cp2_engine.synthetic import touching_cells

    made = [touching_cells((64, 64), diameter=16, seed=s) for s in (1, 2)]
    project = HitlProject.create(tmp_path / "p", images=[m.image for m in made],
                                 initial_model="scratch", diameter=16, device="cpu")  # fmt: skip
    ranking = project.rank_next_by_cost(keep_iou=0.75)
    assert sorted(r.name for r in ranking) == ["image_000", "image_001"]
    assert ranking[0].score >= ranking[1].score and all(r.cost >= 1 for r in ranking)
    assert all(r.score == pytest.approx(r.gain / r.cost) for r in ranking)
    assert project.next_image("cost") == ranking[0].name
    project.accept(ranking[0].name, made[int(ranking[0].name[-1])].labels)
    assert project.next_image("cost") == ranking[1].name  # the only one left


@pytest.mark.slow
def test_online_rounds_go_on_where_the_work_folder_did_not_travel(tmp_path):
    # the journal (small JSON rows) is what a run keeps and commits; the work folder with the
    # HITL projects and their round models stays on the machine. Continuing on another machine
    # used to run the next round on a fresh project, with the pool's first image again
    import shutil

    from cp2_engine.cli import main
    from cp2_engine.hitl import HitlProject

    out = tmp_path / "exp"
    argv = ["experiment", "hitl-vs-offline", *_TINY, "--n-train", "3", "--rounds", "3",
            "--pretrained", "cp2_nuclei", "--strategies", "pretrained_online_random",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    first = json.loads((out / "hitl-vs-offline_keep0.75.json").read_text())["rows"]
    for row in (out / "journal").glob("pretrained_online_random-*-r003*.json"):
        row.unlink()  # killed before round 3 was journalled ...
    shutil.rmtree(out / "journal" / "work")  # ... and continued on another machine
    assert main(argv) == 0
    rows = json.loads((out / "hitl-vs-offline_keep0.75.json").read_text())["rows"]
    online = sorted((r for r in rows if r["step"] > 0), key=lambda r: r["step"])
    assert [r["n_images"] for r in online] == [1, 2, 3]
    assert [r["image"] for r in online] == [r["image"] for r in first if r["step"] > 0]
    (project,) = (out / "journal" / "work").glob("pretrained_online_random-*")
    assert len(HitlProject.open(project).rounds) == 3


def test_table_marks_an_online_strategy_that_has_only_its_start_point_as_not_run():
    from cp2_engine.hitl._experiment_results import hitl_table

    start = {"strategy": "pretrained_online_active", "step": 0, "human_rois": 0, "ap50": 0.0,
             "ap75": 0.0, "drawn": 0, "fixed": 0, "n_images": 0}  # fmt: skip
    rows = [*_hitl_rows(), start]
    line = next(x for x in hitl_table(rows).splitlines() if "pretrained_online_active" in x)
    assert "no round run yet" in line and "not reached" not in line
    random = next(x for x in hitl_table(rows).splitlines() if "online_random" in x)
    assert "no round run yet" not in random
    ran = {k: v["ran"] for k, v in summarise_hitl(rows)["strategies"].items()}
    assert ran["pretrained_online_active"] is False and ran["pretrained_online_random"] is True


def test_table_without_an_offline_point_has_no_target_to_reach():
    # an online run before any offline point read "not reached", as if a target had been missed
    from cp2_engine.hitl._experiment_results import hitl_table

    online = [r for r in _hitl_rows() if r["strategy"] == "pretrained_online_random"]
    line = hitl_table(online).splitlines()[2]
    assert "no offline point yet" in line and "not reached" not in line


def test_figure_leaves_out_a_strategy_with_no_round_run():
    # an online strategy with only its round 0 (the start model, shared by every pretrained
    # strategy) was drawn and named in the legend as if it had been run
    from cp2_engine.hitl._experiment_results import _plot

    start = {"strategy": "pretrained_online_active", "step": 0, "human_rois": 0, "ap50": 0.5,
             "ap75": 0.25, "drawn": 0, "fixed": 0, "n_images": 0}  # fmt: skip
    rows = [*_hitl_rows(), start]
    fig = _plot(rows, "hitl-vs-offline", "t")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "pretrained_online_random" in labels and "scratch_offline" in labels
    assert "pretrained_online_active" not in labels
