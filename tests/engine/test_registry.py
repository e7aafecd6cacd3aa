"""Tests of model lookup: paths, bundled folder, Cellpose cache folders, errors, listing."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from cp2_engine.network import ModelNotFoundError, ModelSpec, find_model, list_models
from cp2_engine.network import _registry as registry


def _touch(path, content: bytes = b"weights"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Fake HOME, Cellpose env folder and bundled folder, all empty at start."""
    home = tmp_path / "home"
    env_dir = tmp_path / "envmodels"
    bundled = tmp_path / "bundled"
    for d in (home, env_dir, bundled):
        d.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(env_dir))
    monkeypatch.setattr(registry, "bundled_dir", lambda: bundled)
    return {"home": home / ".cellpose" / "models", "env": env_dir, "bundled": bundled}


def test_existing_path(tmp_path):
    weights = _touch(tmp_path / "CP_20240101_120000")
    size = _touch(tmp_path / "CP_20240101_120000_size.npy")
    spec = find_model(weights)
    assert spec.source == "path" and spec.paths == (weights,)
    assert spec.size_model == size
    assert spec.diam_mean == 30.0
    assert find_model(str(weights)) == spec


def test_home_cache_replicates_and_size(dirs):
    reps = [_touch(dirs["home"] / f"cyto2torch_{i}") for i in range(4)]
    size = _touch(dirs["home"] / "size_cyto2torch_0.npy")
    spec = find_model("cyto2")
    assert spec.source == "cellpose-cache"
    assert spec.paths == (reps[0],)
    assert spec.size_model == size
    assert spec.diam_mean == 30.0
    assert find_model("cyto2", average_replicates=True).paths == tuple(reps)


def test_nuclei_diameter_and_partial_replicates(dirs):
    reps = [_touch(dirs["env"] / f"nucleitorch_{i}") for i in (0, 2)]
    spec = find_model("nuclei", average_replicates=True)
    assert spec.paths == tuple(reps)
    assert spec.diam_mean == 17.0
    assert spec.size_model is None


def test_env_folder_before_home(dirs):
    in_env = _touch(dirs["env"] / "cyto3")
    _touch(dirs["home"] / "cyto3")
    size = _touch(dirs["env"] / "size_cyto3.npy")
    spec = find_model("cyto3")
    assert spec.paths == (in_env,) and spec.size_model == size


def test_bundled_before_cache(dirs):
    bundled = _touch(dirs["bundled"] / "cyto3" / "cyto3")
    _touch(dirs["env"] / "cyto3")
    spec = find_model("cyto3")
    assert spec.source == "bundled" and spec.paths == (bundled,)


def test_zoo_names_and_licence(dirs):
    for name in ("CP", "TN2", "LC4", "livecell"):
        _touch(dirs["home"] / name)
    assert find_model("CP").license == ""
    assert "non-commercial" in find_model("TN2").license
    assert "non-commercial" in find_model("livecell").license
    assert find_model("LC4").description


def test_home_is_read_at_call_time(dirs, tmp_path, monkeypatch):
    monkeypatch.delenv("CELLPOSE_LOCAL_MODELS_PATH")
    with pytest.raises(ModelNotFoundError):
        find_model("mymodel")
    other_home = tmp_path / "other"
    weights = _touch(other_home / ".cellpose" / "models" / "mymodel")
    monkeypatch.setenv("HOME", str(other_home))
    assert find_model("mymodel").paths == (weights,)


def test_missing_lists_every_place(dirs):
    with pytest.raises(ModelNotFoundError) as info:
        find_model("cyto2")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(dirs["env"] / "cyto2torch_0") in message
    assert str(dirs["home"] / "cyto2torch_0") in message
    assert str(dirs["bundled"] / "cyto2") in message
    with pytest.raises(ModelNotFoundError, match="nothing is downloaded"):
        find_model(str(dirs["env"] / "sub" / "absent"))


def test_wrong_type():
    with pytest.raises(TypeError, match="model name or path"):
        find_model(3)


def test_sidecar_diameter_and_description(dirs):
    from cp2_engine.network import CPnet, save_model

    with_sidecar = dirs["home"] / "mine"
    dirs["home"].mkdir(parents=True)
    save_model(CPnet((2, 8, 16), diam_mean=17.0), with_sidecar, metadata={"description": "x"})
    spec = find_model("mine")
    assert spec.diam_mean == 17.0 and spec.description == "x"


def test_list_models(dirs):
    for i in range(4):
        _touch(dirs["home"] / f"cytotorch_{i}")
    _touch(dirs["home"] / "size_cytotorch_0.npy")
    _touch(dirs["home"] / "gui_models.txt", b"CP_1\n")
    _touch(dirs["home"] / "CP_1")
    _touch(dirs["env"] / "CP_1")
    _touch(dirs["env"] / "style_choice.npy")
    _touch(dirs["env"] / "nucleitorch_2")
    _touch(dirs["bundled"] / "tiny" / "tiny")
    np.save(dirs["bundled"] / "tiny" / "tiny_size.npy", np.zeros(1))
    specs = list_models()
    by_name = {s.name: s for s in specs}
    assert sorted(by_name) == ["CP_1", "cyto", "nucleitorch_2", "tiny"]
    assert by_name["cyto"].paths == (dirs["home"] / "cytotorch_0",)
    assert by_name["CP_1"].paths == (dirs["env"] / "CP_1",)
    assert by_name["cyto"].size_model is not None
    assert by_name["tiny"].source == "bundled" and by_name["tiny"].size_model is not None
    assert all(isinstance(s, ModelSpec) for s in specs)


def test_list_models_empty(dirs):
    assert list_models() == []


def test_cli_models_lists_and_shows(dirs, capsys):
    from cp2_engine.cli import _models as cmd
    from cp2_engine.network import CPnet, save_model

    dirs["home"].mkdir(parents=True)
    save_model(CPnet((2, 8, 16)), dirs["home"] / "small")
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    assert cmd.run(parser.parse_args([])) == 0
    assert "small" in capsys.readouterr().out
    assert cmd.run(parser.parse_args(["small", "--check", "--json"])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["check"]["sha256_verified"] is True
    assert out["check"]["nbase"] == [2, 8, 16]
