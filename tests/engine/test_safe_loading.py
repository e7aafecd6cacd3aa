"""Opening a file cannot run code: every loader of files that travel between people refuses a
pickle that asks for anything but data, without executing it, and names the file.

Each malicious file holds an object whose ``__reduce__`` would create a marker file; the test
checks that the loader raises a clear error and that the marker does not exist. Real Cellpose
3.1.1.3 ``_seg.npy`` files (written by the reference package in its own venv) still load.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cp2_engine.inference import SizeModel
from cp2_engine.io import load_seg_npy, save_seg_npy
from cp2_engine.synthetic import touching_cells
from cp2_engine.util import UnsafeFileError, load_npy_restricted


class _Boom:
    """Unpickling this runs ``touch <marker>`` (what an attacker's file would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _evil_npy(path: Path, marker: Path, extra: dict | None = None) -> Path:
    payload = {"masks": np.ones((4, 4), np.uint16), "filename": "x.tif", "hook": _Boom(marker)}
    np.save(path, dict(payload, **(extra or {})), allow_pickle=True)
    return path


def _refused(call, path: Path, marker: Path, error=ValueError) -> None:
    with pytest.raises(error) as info:
        call(path)
    assert not marker.exists(), "the malicious file ran code"
    assert str(path) in str(info.value)


def test_the_malicious_file_really_runs_code_with_plain_np_load(tmp_path):
    """Guard against a vacuous test: unrestricted loading of the same file creates the marker."""
    marker = tmp_path / "pwned"
    path = _evil_npy(tmp_path / "a_seg.npy", marker)
    np.load(path, allow_pickle=True)
    assert marker.exists()


def test_seg_npy_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    path = _evil_npy(tmp_path / "a_seg.npy", marker)
    _refused(load_seg_npy, path, marker, UnsafeFileError)
    with pytest.raises(ValueError, match=r"(os|posix|nt)\.system"):
        load_seg_npy(path)
    assert not marker.exists()


_ATTACKS = {
    "eval": lambda m: (eval, (f"__import__('os').system('touch {m}')",)),
    "exec": lambda m: (exec, (f"open({str(m)!r}, 'w').close()",)),
    "subprocess": lambda m: (subprocess.call, (["touch", str(m)],)),
    "pathlib": lambda m: (Path.touch, (m,)),
    "numpy-function": lambda m: (np.savetxt, (str(m), np.zeros(1))),
}


@pytest.mark.parametrize("attack", sorted(_ATTACKS))
def test_no_global_outside_the_data_types_is_resolved(tmp_path, attack):
    marker = tmp_path / "pwned"
    reduced = _ATTACKS[attack](marker)

    class Evil:
        def __reduce__(self):
            return reduced

    path = tmp_path / "b_seg.npy"
    np.save(path, {"masks": np.zeros((2, 2), np.uint8), "x": [Evil()]}, allow_pickle=True)
    _refused(load_seg_npy, path, marker, UnsafeFileError)


def test_size_model_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "m_size.npy"
    evil = {"A": np.ones(4), "smean": np.zeros(4), "ymean": 0.0, "diam_mean": _Boom(marker)}
    np.save(path, evil, allow_pickle=True)
    _refused(SizeModel.load, path, marker, UnsafeFileError)
    SizeModel(A=np.ones(4), smean=np.zeros(4), ymean=0.1, diam_mean=17).save(path)
    assert SizeModel.load(path).diam_mean == 17.0


def test_training_folders_read_seg_npy_safely(tmp_path):
    from cp2_engine.training import load_folder

    marker = tmp_path / "pwned"
    sample = touching_cells((32, 32), n_cells=3, diameter=10, seed=1)
    tifffile.imwrite(tmp_path / "im.tif", sample.image)
    path = _evil_npy(tmp_path / "im_seg.npy", marker)
    _refused(load_folder, path.parent, marker, UnsafeFileError)


def _evil_torch(path: Path, marker: Path, **fields) -> Path:
    torch.save({**fields, "hook": _Boom(marker)}, path)
    return path


def test_recipe_checkpoint_refuses_code(tmp_path):
    from cp2_engine.training import load_checkpoint

    marker = tmp_path / "pwned"
    path = _evil_torch(tmp_path / "train.ckpt", marker, format="cp2-recipe-checkpoint", step=1)
    _refused(load_checkpoint, path, marker)


def test_training_checkpoint_refuses_code(tmp_path):
    from cp2_engine.training import load_checkpoint

    marker = tmp_path / "pwned"
    path = _evil_torch(tmp_path / "m.ckpt", marker, format="cp2-training-checkpoint")
    _refused(load_checkpoint, path, marker)


def test_model_weights_refuse_code(tmp_path):
    from cp2_engine.network import load_state_dict

    marker = tmp_path / "pwned"
    path = _evil_torch(tmp_path / "model", marker, weight=torch.zeros(2))
    with pytest.raises(ValueError):
        load_state_dict(path)
    assert not marker.exists()


def test_recipe_data_cache_is_rebuilt_not_run(tmp_path):
    from cp2_engine.recipes import _data

    marker = tmp_path / "pwned"
    rng = np.random.default_rng(0)
    items = [
        _data.Item(rng.random((2, 8, 8), dtype=np.float32), rng.integers(0, 4, (8, 8), np.int32),
                   rng.random((2, 8, 8), dtype=np.float32), f"src{i}")
        for i in range(2)
    ]  # fmt: skip
    cache = tmp_path / "data.pt"
    torch.save(_data._cache_dict("k", items), cache)
    back = _data._read_cache(cache, "k")
    assert [it.source for it in back] == ["src0", "src1"]
    for a, b in zip(items, back, strict=True):
        for name in ("x", "labels", "flows"):
            got, want = getattr(b, name), getattr(a, name)
            assert got.dtype == want.dtype and np.array_equal(got, want)
    assert _data._read_cache(cache, "other key") is None
    torch.save({"key": "k", "format": 2, "items": _Boom(marker)}, cache)  # an old pickled cache
    assert _data._read_cache(cache, "k") is None
    assert not marker.exists()


def test_restricted_loader_reads_plain_data(tmp_path):
    data = {
        "a": np.arange(6, dtype=np.int16).reshape(2, 3),
        "nested": [np.float32(1.5), (1, 2.0, "x", b"raw", None, True), {"k": np.zeros(0)}],
        "dt": np.dtype(">u2"),
        "obj": np.array([np.ones(2), np.ones(3)], dtype=object),
        "c": 1 + 2j,
        "s": {1, 2},
    }
    path = tmp_path / "d.npy"
    np.save(path, data, allow_pickle=True)
    back = load_npy_restricted(path).item()
    assert back["nested"][1] == (1, 2.0, "x", b"raw", None, True)
    assert back["dt"] == data["dt"] and back["c"] == 1 + 2j and back["s"] == {1, 2}
    np.testing.assert_array_equal(back["a"], data["a"])
    assert back["nested"][0] == np.float32(1.5) and type(back["nested"][0]) is np.float32
    np.save(path, np.arange(4))  # not a pickle at all
    np.testing.assert_array_equal(load_npy_restricted(path), np.arange(4))
    # structured dtypes never occur in Cellpose files: refused clearly, not rebuilt
    np.save(path, {"dt": np.dtype([("y", "<f4"), ("x", "<i8")])}, allow_pickle=True)
    with pytest.raises(ValueError, match=r"d\.npy"):
        load_npy_restricted(path)


def test_corrupt_array_pickles_raise_instead_of_crashing(tmp_path):
    """numpy's own ndarray.__setstate__ crashed the process (segfault) on some corrupted
    _seg.npy files; arrays are now rebuilt from a checked state. Deterministic corruptions of a
    valid file: every one loads or raises a ValueError naming the file."""
    import io as pyio
    import random

    # a file found by fuzzing: a corrupted dtype state that crashed numpy's dtype.__setstate__
    crash = bytes.fromhex(
        "934e554d5059010076007b276465736372273a20277c4f272c2027666f727472616e5f6f72646572273a2046"
        "616c73652c20277368617065273a2028292c207d202020202020202020202020202020202020202020202020"
        "2020202020202020202020202020202020202020202020202020202020202020202020202020200a800495fd"
        "000000000000008c166e756d70792e5f636f72652e6d756c74696172726179948c0c5f7265636f6e73747275"
        "63749493948c056e756d7079948c076e6461727261799493944b0085944301629487945294284b012968038c"
        "0564747970659493948c024f3894898887945294284b038c017c944e4e4e4affffffff4affffffff4b3f7494"
        "62895d947d94288c056d61736b7394680268054b008594680787945294284b014b044b048694680b8c027532"
        "94898887945294284b038c013c944e304e4affffffff4affffffff4b00749462894320000001000200030004"
        "00050006000700080009000a000b000c000d000e000f00947494628c03696d67944e75617494622e"
    )
    path = tmp_path / "c_seg.npy"
    path.write_bytes(crash)
    with pytest.raises(ValueError, match=r"c_seg\.npy"):
        load_seg_npy(path)
    buf = pyio.BytesIO()
    masks = np.arange(16, dtype=np.uint16).reshape(4, 4)
    np.save(buf, {"masks": masks, "img": np.ones((2, 2)), "x": [np.float32(1)]}, allow_pickle=True)
    valid = buf.getvalue()
    rng = random.Random(0)
    for _ in range(3000):
        cut = rng.randrange(len(valid))
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        path.write_bytes(valid[:cut] + noise + valid[cut + len(noise) :])
        try:
            load_seg_npy(path)
        except ValueError as err:
            assert "c_seg.npy" in str(err)


@pytest.mark.parametrize("content", [b"", b"not numpy", b"\x93NUMPY\x01\x00garbage"])
def test_restricted_loader_rejects_garbage_clearly(tmp_path, content):
    path = tmp_path / "g_seg.npy"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"g_seg\.npy"):
        load_seg_npy(path)


def test_cp2_seg_npy_round_trips(tmp_path):
    sample = touching_cells((32, 40), n_cells=4, diameter=10, seed=2)
    path = save_seg_npy(tmp_path / "a_seg.npy", image=sample.image, masks=sample.labels)
    dat = load_seg_npy(path)
    np.testing.assert_array_equal(dat["masks"], sample.labels)
    assert isinstance(dat["flows"], list) and isinstance(dat["chan_choose"], list)


_CELLPOSE_WRITER = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    from cellpose import dynamics, io, plot
    folder = sys.argv[1]
    masks = np.load(folder + "/labels.npy")
    img = np.load(folder + "/image.npy")
    dP = dynamics.masks_to_flows(masks)
    cellprob = np.where(masks > 0, 5.0, -5.0).astype(np.float32)
    flows = [plot.dx_to_circ(dP), dP, cellprob, dP]
    io.masks_flows_to_seg(img, masks, flows, folder + "/plain.tif", diams=17.0, channels=[0, 0])
    io.masks_flows_to_seg([img], [masks], [flows], [folder + "/listed.tif"],
                          diams=np.array([21.5], np.float32), channels=[2, 1])
    """
)


@pytest.mark.parity
def test_real_cellpose_seg_npy_files_still_load(tmp_path, cellpose_python):
    sample = touching_cells((48, 56), n_cells=5, diameter=14, seed=3)
    labels = sample.labels.astype(np.uint16)
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "image.npy", sample.image.astype(np.float32))
    subprocess.run([cellpose_python, "-c", _CELLPOSE_WRITER, str(tmp_path)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    for name, diameter in (("plain", 17.0), ("listed", 21.5)):
        path = tmp_path / f"{name}_seg.npy"
        dat = load_seg_npy(path)
        np.testing.assert_array_equal(dat["masks"], labels)
        assert float(dat["diameter"]) == diameter
        assert len(dat["flows"]) == 5 and dat["flows"][0].ndim == 4
        assert dat["ismanual"].shape == (labels.max(),)
        # and the unrestricted loader sees exactly the same content
        ref = np.load(path, allow_pickle=True).item()
        assert sorted(ref) == sorted(dat)


def test_out_of_band_buffer_opcodes_are_refused(tmp_path):
    """Protocol-5 buffer opcodes never occur in numpy/Cellpose files; on a corrupted stream
    they made CPython report 'deallocated bytearray object has exported buffers' (an error that
    failed a fresh-clone test run). They are refused before unpickling, naming the file."""
    import io as pyio
    import pickle

    buf = pyio.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    path = tmp_path / "b_seg.npy"
    path.write_bytes(buf.getvalue() + pickle.dumps(bytearray(b"abc"), protocol=5))
    with pytest.raises(ValueError, match=r"b_seg\.npy.*BYTEARRAY8"):
        load_seg_npy(path)
