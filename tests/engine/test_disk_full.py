"""A save that fails for lack of space leaves the previous version intact, leaves no temporary
file behind and tells the user which file could not be saved and why (``DiskFullError``).

The full disk is simulated by a writer that writes part of its output and then raises
``OSError(ENOSPC)``, the way a real write on a full file system fails.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from cp2_engine import io as cio
from cp2_engine.synthetic import touching_cells
from cp2_engine.util import DiskFullError, atomic_write, atomic_write_file


def _no_space(*_args, **_kw):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _partial_then_full(fh):
    fh.write(b"half of the new content")
    _no_space()


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _check_disk_full(info, path: Path) -> None:
    err = info.value
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert err.filename == str(path)
    assert str(path) in str(err) and "disk full" in str(err)
    assert "unchanged" in str(err)


def test_atomic_write_file_keeps_the_previous_version(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"previous")
    with pytest.raises(DiskFullError) as info:
        atomic_write_file(path, _partial_then_full)
    _check_disk_full(info, path)
    assert path.read_bytes() == b"previous"
    assert _only(tmp_path) == ["model.bin"]


def test_atomic_write_file_new_file_leaves_nothing(tmp_path):
    path = tmp_path / "sub" / "new.bin"
    with pytest.raises(DiskFullError):
        atomic_write_file(path, _partial_then_full)
    assert _only(path.parent) == []


def test_atomic_write_context_keeps_the_previous_version(tmp_path):
    path = tmp_path / "labels.tif"
    path.write_bytes(b"previous")
    with pytest.raises(DiskFullError) as info, atomic_write(path) as tmp:
        tmp.write_bytes(b"half")
        _no_space()
    _check_disk_full(info, path)
    assert path.read_bytes() == b"previous"
    assert _only(tmp_path) == ["labels.tif"]


def test_full_disk_when_flushing_is_reported_too(tmp_path, monkeypatch):
    path = tmp_path / "a.bin"
    path.write_bytes(b"previous")
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(DiskFullError):
        atomic_write_file(path, lambda fh: fh.write(b"new"))
    with pytest.raises(DiskFullError), atomic_write(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"previous"
    assert _only(tmp_path) == ["a.bin"]


def test_no_space_for_the_temp_file_itself(tmp_path, monkeypatch):
    import tempfile

    path = tmp_path / "a.bin"
    path.write_bytes(b"previous")
    monkeypatch.setattr(tempfile, "mkstemp", _no_space)
    with pytest.raises(DiskFullError, match=r"a\.bin"):
        atomic_write_file(path, lambda fh: fh.write(b"new"))
    with pytest.raises(DiskFullError, match=r"a\.bin"), atomic_write(path):
        pass
    assert path.read_bytes() == b"previous"


def test_other_errors_are_not_disguised(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"previous")

    def denied(fh):
        fh.write(b"x")
        raise PermissionError(errno.EACCES, "denied")

    with pytest.raises(PermissionError) as info:
        atomic_write_file(path, denied)
    assert not isinstance(info.value, DiskFullError)
    with pytest.raises(ValueError, match="boom"), atomic_write(path):
        raise ValueError("boom")
    assert path.read_bytes() == b"previous"
    assert _only(tmp_path) == ["a.bin"]


def test_seg_npy_resave_on_a_full_disk_keeps_the_annotation(tmp_path, monkeypatch):
    sample = touching_cells((32, 32), n_cells=3, diameter=10, seed=5)
    path = cio.save_seg_npy(tmp_path / "a_seg.npy", image=sample.image, masks=sample.labels)
    before = path.read_bytes()
    real_save = np.save

    def save_half(file, arr, *args, **kw):
        real_save(file, np.zeros(1000), *args, **kw)  # some bytes reach the temp file...
        _no_space()  # ...then the disk is full

    monkeypatch.setattr(np, "save", save_half)
    with pytest.raises(DiskFullError) as info:
        cio.save_seg_npy(path, image=sample.image, masks=sample.labels + 0, overwrite=True)
    _check_disk_full(info, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _only(tmp_path) == ["a_seg.npy"]
    np.testing.assert_array_equal(cio.load_seg_npy(path)["masks"], sample.labels)


def test_model_save_on_a_full_disk_keeps_the_previous_model(tmp_path, monkeypatch):
    import torch

    from cp2_engine.network import CPnet, load_state_dict, save_model

    path = tmp_path / "model"
    save_model(CPnet(nbase=[2, 4, 8, 16, 32]), path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_save = torch.save

    def save_half(obj, fh, *args, **kw):
        real_save({"partial": torch.zeros(10)}, fh)
        _no_space()

    monkeypatch.setattr(torch, "save", save_half)
    with pytest.raises(DiskFullError, match="model"):
        save_model(CPnet(nbase=[2, 4, 8, 16, 32]), path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert load_state_dict(path)
