"""A crash between a model's weights and its ``.json`` sidecar is harmless: ``save_model`` writes
the new sidecar first under a pending name and moves it into place after the weights, and
``read_metadata`` finishes an interrupted save (using the pending sidecar only when its sha256
is the weights file's)."""

from __future__ import annotations

import json

import pytest

from cp2_engine.network import CPnet, read_metadata, save_model, verify_sha256


def _net(seed: int) -> CPnet:
    import torch

    torch.manual_seed(seed)
    return CPnet(nbase=[2, 4, 8, 16, 32])


def test_kill_after_the_weights_before_the_sidecar(tmp_path, monkeypatch):
    from cp2_engine.network import _weights

    path = tmp_path / "model"
    save_model(_net(0), path, metadata={"version": 1})
    monkeypatch.setattr(_weights, "_move_sidecar", lambda pending, sidecar: None)  # "killed"
    save_model(_net(1), path, metadata={"version": 2})
    monkeypatch.undo()
    assert json.loads((tmp_path / "model.json").read_text())["version"] == 1  # stale on disk
    assert read_metadata(path)["version"] == 2  # repaired by the reader
    assert verify_sha256(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.json"]


def test_kill_before_the_weights_keeps_the_old_pair(tmp_path, monkeypatch):
    import io

    from cp2_engine.network import _weights

    path = tmp_path / "model"
    save_model(_net(0), path, metadata={"version": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_write = _weights.atomic_write_file

    def killed(target, write):
        if target != path:
            return real_write(target, write)
        write(io.BytesIO())  # the pending sidecar is written, then the process stops
        raise KeyboardInterrupt

    monkeypatch.setattr(_weights, "atomic_write_file", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model(_net(1), path, metadata={"version": 2})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # a pending sidecar left by a SIGKILL at that point (no cleanup) is ignored: sha differs
    (tmp_path / ".model.json.pending").write_text(json.dumps({"sha256": "0" * 64, "version": 2}))
    assert read_metadata(path)["version"] == 1
    assert verify_sha256(path)


def test_missing_sidecar_is_repaired_from_the_pending_one(tmp_path, monkeypatch):
    from cp2_engine.network import _weights

    path = tmp_path / "model"
    monkeypatch.setattr(_weights, "_move_sidecar", lambda pending, sidecar: None)
    save_model(_net(0), path, metadata={"version": 1})
    monkeypatch.undo()
    assert not (tmp_path / "model.json").exists()
    assert read_metadata(path)["version"] == 1 and verify_sha256(path)
    assert (tmp_path / "model.json").is_file()
