"""The paper's experiments: result files, settings, and a `cp2 experiment --quick` smoke test."""

from __future__ import annotations

import csv
import json

import pytest

from cp2_engine.hitl import (
    ExperimentData,
    ExperimentSettings,
    iter_hitl_vs_offline,
    synthetic_data,
    write_results,
)


def _hitl_rows():
    rows = []
    for mode in ("online", "offline"):
        for init in ("pretrained", "scratch"):
            for rnd in range(3):
                drawn = rnd * (3 if mode == "online" else 10)
                rows.append({"mode": mode, "init": init, "round": rnd, "n_images": rnd,
                             "drawn": drawn, "drawn_total": drawn, "ap50": 0.1 * rnd,
                             "train_seconds": 1.0})  # fmt: skip
    return rows


def test_write_results_round_trip(tmp_path):
    rows = _hitl_rows()
    csv_path, json_path, png_path = write_results(rows, tmp_path, name="hitl-vs-offline")
    with csv_path.open() as fh:
        back = list(csv.DictReader(fh))
    assert len(back) == len(rows)
    assert back[5]["mode"] == rows[5]["mode"]
    assert float(back[5]["ap50"]) == pytest.approx(rows[5]["ap50"])
    assert json.loads(json_path.read_text()) == rows
    assert png_path.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_learning_curve_and_errors(tmp_path):
    rows = [{"init": i, "size": s, "seed": 0, "n_images": 1, "n_rois": 10 * s, "ap50": 0.5,
             "train_seconds": 1.0} for i in ("pretrained", "scratch") for s in (1, 2)]  # fmt: skip
    paths = write_results(rows, tmp_path, name="learning-curve")
    assert all(p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match="name must be one of"):
        write_results(rows, tmp_path, name="nope")
    with pytest.raises(ValueError, match="no result rows"):
        write_results([], tmp_path, name="learning-curve")


def test_settings_and_train_configs():
    quick = ExperimentSettings.quick(n_rounds=3)
    assert quick.n_rounds == 3 and quick.device == "cpu"
    online, offline = quick.train_config("online"), quick.train_config("offline")
    assert (online.mode, online.n_epochs) == ("online", quick.n_epochs_online)
    assert (offline.mode, offline.n_epochs) == ("offline", quick.n_epochs_offline)
    with pytest.raises(ValueError, match="n_rounds"):
        ExperimentSettings.quick(n_rounds=0)
    full = ExperimentSettings()
    assert (full.n_epochs_online, full.n_epochs_offline, full.bsize) == (100, 300, 224)


def test_synthetic_data_is_seeded():
    a = synthetic_data(n_train=2, n_test=1, shape=(64, 64), seed=3)
    b = synthetic_data(n_train=2, n_test=1, shape=(64, 64), seed=3)
    assert (a.train_labels[1] == b.train_labels[1]).all()
    assert len(a.test_images) == 1 and a.diameter > 0


def test_too_many_rounds_is_an_error():
    data = ExperimentData([], [], [], [], diameter=20.0, source="empty")
    gen = iter_hitl_vs_offline(data, pretrained="x", settings=ExperimentSettings.quick())
    with pytest.raises(ValueError, match="n_rounds"):
        next(gen)


@pytest.mark.slow
def test_cli_hitl_vs_offline_quick(tmp_path):
    from cp2_engine.cli import main

    out = tmp_path / "exp"
    argv = ["experiment", "hitl-vs-offline", "--quick", "--rounds", "1", "--epochs-online", "1",
            "--epochs-offline", "1", "--pretrain-epochs", "1", "--n-train", "1", "--n-test", "1",
            "--bsize", "32", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "hitl-vs-offline.json").read_text())
    assert {(r["mode"], r["init"]) for r in rows} == {
        (m, i) for m in ("online", "offline") for i in ("pretrained", "scratch")
    }
    offline = [r for r in rows if r["mode"] == "offline" and r["round"] == 1]
    n_true = int(offline[0]["drawn"])
    assert n_true > 0 and all(r["drawn"] == n_true for r in offline)  # offline draws every ROI
    online = [r for r in rows if r["mode"] == "online" and r["round"] == 1]
    assert all(0 <= r["drawn"] <= n_true for r in online)
    assert all(0.0 <= r["ap50"] <= 1.0 for r in rows)
    assert (out / "hitl-vs-offline.png").is_file() and (out / "hitl-vs-offline.csv").is_file()
    assert list((out / "projects").glob("*/online_scratch/models/round_001"))


@pytest.mark.slow
def test_cli_learning_curve_quick(tmp_path):
    from cp2_engine.cli import main

    out = tmp_path / "lc"
    argv = ["experiment", "learning-curve", "--quick", "--sizes", "0.5", "1", "--seeds", "1",
            "--epochs-offline", "1", "--pretrain-epochs", "1", "--n-train", "2", "--n-test", "1",
            "--bsize", "32", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "learning-curve.json").read_text())
    assert sorted((r["init"], r["size"]) for r in rows) == [
        ("pretrained", 0.5), ("pretrained", 1), ("scratch", 0.5), ("scratch", 1)
    ]  # fmt: skip
    assert all(r["n_images"] == 1 and r["n_rois"] > 0 for r in rows)
    assert all(0.0 <= r["ap50"] <= 1.0 for r in rows)
    assert (out / "learning-curve.png").is_file()
