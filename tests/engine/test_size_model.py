"""Tests of the style -> diameter size model: prediction formula, file round trip, ridge fit."""

from __future__ import annotations

import numpy as np
import pytest

from cp2_engine.inference import SizeModel, fit_size_model
from cp2_engine.inference._size_model import MIN_DIAMETER


def _random_model(seed: int) -> SizeModel:
    rng = np.random.default_rng(seed)
    return SizeModel(
        A=rng.normal(size=256), smean=rng.normal(size=256) / 16, ymean=0.3, diam_mean=30.0
    )


def test_formula_and_floor():
    rng = np.random.default_rng(0)
    model = _random_model(1)
    style = rng.normal(size=256) / 16
    expected = np.exp(model.A @ (style - model.smean) + np.log(30.0) + 0.3)
    assert model.diameter_from_style(style) == pytest.approx(max(expected, MIN_DIAMETER))
    tiny = SizeModel(A=np.ones(4), smean=np.zeros(4), ymean=-10.0, diam_mean=30.0)
    assert tiny.diameter_from_style(np.zeros(4)) == MIN_DIAMETER


def test_batch_prediction_matches_single():
    rng = np.random.default_rng(2)
    model = _random_model(3)
    styles = rng.normal(size=(5, 256)) / 16
    batch = model.diameter_from_style(styles)
    assert batch.shape == (5,)
    assert np.allclose(batch, [model.diameter_from_style(s) for s in styles])


def test_save_load_round_trip(tmp_path):
    model = _random_model(4)
    path = tmp_path / "size_mine.npy"
    model.save(path)
    loaded = SizeModel.load(path)
    assert np.array_equal(loaded.A, model.A) and np.array_equal(loaded.smean, model.smean)
    assert loaded.ymean == model.ymean and loaded.diam_mean == model.diam_mean
    raw = np.load(path, allow_pickle=True).item()
    assert set(raw) == {"A", "smean", "ymean", "diam_mean"}
    assert [p.name for p in tmp_path.iterdir()] == ["size_mine.npy"]


def test_loads_cellpose_style_dict(tmp_path):
    rng = np.random.default_rng(5)
    params = {
        "A": rng.normal(size=256).astype(np.float32),
        "smean": rng.normal(size=256).astype(np.float32),
        "diam_mean": 17.0,
        "ymean": np.float64(-0.2),
    }
    path = tmp_path / "size_nucleitorch_0.npy"
    np.save(path, params)
    model = SizeModel.load(path)
    assert model.diam_mean == 17.0 and model.ymean == pytest.approx(-0.2)
    assert model.A.dtype == np.float64


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        SizeModel.load(tmp_path / "absent.npy")
    bad = tmp_path / "bad.npy"
    np.save(bad, {"A": np.zeros(3)})
    with pytest.raises(ValueError, match="keys"):
        SizeModel.load(bad)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="size-model"):
        SizeModel.load(junk)


def test_validation():
    with pytest.raises(ValueError, match="same length"):
        SizeModel(A=np.zeros(3), smean=np.zeros(4), ymean=0.0, diam_mean=30.0)
    with pytest.raises(ValueError, match="positive"):
        SizeModel(A=np.zeros(3), smean=np.zeros(3), ymean=0.0, diam_mean=0.0)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        SizeModel(A=np.zeros(4), smean=np.zeros(4), ymean=0, diam_mean=1).diameter_from_style(
            np.zeros(3)
        )


def test_fit_recovers_diameters_from_styles():
    rng = np.random.default_rng(6)
    n, dim = 400, 256
    truth = rng.normal(size=dim) * 0.05
    styles = rng.normal(size=(n, dim))
    styles /= np.linalg.norm(styles, axis=1, keepdims=True)
    log_d = np.log(30.0) + 0.1 + 20 * styles @ truth + rng.normal(scale=0.01, size=n)
    model = fit_size_model(styles[:300], np.exp(log_d[:300]), diam_mean=30.0, l2=0.01)
    pred = model.diameter_from_style(styles[300:])
    assert np.corrcoef(np.log(pred), log_d[300:])[0, 1] > 0.9
    assert model.ymean == pytest.approx(np.mean(log_d[:300]) - np.log(30.0))


def test_fit_l2_shrinks_weights():
    rng = np.random.default_rng(7)
    styles = rng.normal(size=(50, 16))
    diams = np.exp(3 + styles @ rng.normal(size=16) * 0.1)
    small = fit_size_model(styles, diams, diam_mean=30.0, l2=1e-3)
    large = fit_size_model(styles, diams, diam_mean=30.0, l2=1e3)
    assert np.linalg.norm(large.A) < 0.5 * np.linalg.norm(small.A)
    constant = fit_size_model(styles, np.full(50, 12.0), diam_mean=30.0)
    assert np.allclose(constant.A, 0) and constant.diameter_from_style(styles[0]) == 12.0


def test_fit_errors():
    with pytest.raises(ValueError, match="N >= 2"):
        fit_size_model(np.zeros((3, 4)), np.ones(2), diam_mean=30.0)
    with pytest.raises(ValueError, match="positive"):
        fit_size_model(np.zeros((3, 4)), np.array([1.0, 0.0, 2.0]), diam_mean=30.0)
