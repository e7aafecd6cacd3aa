"""Tests of the zoo evaluation table and the PNG figures."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cp2_engine.viz import plot_style_map
from cp2_engine.viz._cluster_figures import thumbnail
from cp2_engine.zoo import ZooEvaluation, plot_ap_curves, tsne_embedding
from cp2_engine.zoo._evaluate import DEFAULT_THRESHOLDS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_evaluation(rng):
    thr = np.array(DEFAULT_THRESHOLDS)
    clusters = np.array([0, 0, 1, 1, 1])
    ap_zoo = np.sort(rng.random((5, thr.size)), axis=1)[:, ::-1]
    ap_gen = ap_zoo * 0.5
    return ZooEvaluation(thr, clusters, ap_zoo, ap_gen, tuple(f"im{i}" for i in range(5)))


def test_thresholds_are_paper_range():
    assert DEFAULT_THRESHOLDS[0] == 0.5 and DEFAULT_THRESHOLDS[-1] == 0.95
    assert len(DEFAULT_THRESHOLDS) == 10


def test_rows_average_per_cluster_and_overall():
    ev = make_evaluation(np.random.default_rng(0))
    rows = {r["group"]: r for r in ev.rows()}
    assert set(rows) == {"cluster0", "cluster1", "all"}
    assert rows["cluster1"]["n_images"] == 3 and rows["all"]["n_images"] == 5
    assert rows["cluster0"]["zoo_ap0.5"] == pytest.approx(ev.ap_zoo[:2, 0].mean())
    assert rows["all"]["zoo_ap_mean"] == pytest.approx(ev.ap_zoo.mean())
    assert rows["all"]["generalist_ap_mean"] == pytest.approx(0.5 * ev.ap_zoo.mean())


def test_markdown_and_csv(tmp_path):
    ev = make_evaluation(np.random.default_rng(1))
    md = ev.to_markdown().splitlines()
    assert md[0].startswith("| group | n_images | zoo_ap0.5 | zoo_ap0.75 | zoo_ap0.9")
    assert len(md) == 2 + 3
    ev.write_csv(tmp_path / "ap.csv")
    with open(tmp_path / "ap.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 * 10
    assert float(rows[0]["ap_zoo"]) == pytest.approx(ev.ap_zoo[0, 0], abs=1e-6)


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(2)
    plot_ap_curves(make_evaluation(rng), tmp_path / "ap.png")
    styles = rng.normal(size=(12, 8))
    labels = np.repeat([0, 1, 2], 4)
    images = [rng.random((40, 50)) for _ in range(12)]
    plot_style_map(
        tsne_embedding(styles, seed=0), labels, images, tmp_path / "tsne.png", n_examples=3
    )
    for name in ("ap.png", "tsne.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000


def test_style_map_rejects_mismatched_inputs(tmp_path):
    with pytest.raises(ValueError, match="N images"):
        plot_style_map(np.zeros((3, 2)), [0, 1, 1], [np.zeros((8, 8))], tmp_path / "x.png")


def test_thumbnail_is_scaled_centre_square():
    img = np.zeros((60, 100))
    img[:, 50:] = 1.0
    th = thumbnail(img, size=20)
    assert th.shape == (20, 20) and th.min() >= 0 and th.max() <= 1
    assert th[:, :8].mean() < 0.1 and th[:, 12:].mean() > 0.9
