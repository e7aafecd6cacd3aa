"""Fuzzing the files users hand us: random or truncated bytes, ``_seg.npy`` dicts with missing
or wrongly typed fields, odd label images. Each gives a result or a clear ValueError /
TypeError / FileNotFoundError, never a crash, a hang or executed code."""

from __future__ import annotations

import io as pyio
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cp2_engine.inference import SizeModel
from cp2_engine.io import load_seg_npy, save_masks
from cp2_engine.network import load_state_dict

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
CLEAR = (ValueError, TypeError, FileNotFoundError)


def _npy_bytes(obj) -> bytes:
    buf = pyio.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    return buf.getvalue()


_VALID_SEG = _npy_bytes({"masks": np.arange(16, dtype=np.uint16).reshape(4, 4), "img": None})


def _load_bytes(loader, data: bytes, name: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            return loader(path)
        except CLEAR as err:
            assert str(path) in str(err) or path.name in str(err), err
            return None


@FAST
@given(st.binary(max_size=600))
def test_random_bytes_as_any_file(data):
    _load_bytes(load_seg_npy, data, "a_seg.npy")
    _load_bytes(SizeModel.load, data, "a_size.npy")
    _load_bytes(load_state_dict, data, "model")


@FAST
@given(st.integers(0, len(_VALID_SEG) - 1), st.binary(max_size=8))
def test_truncated_or_corrupted_seg_npy(cut, noise):
    _load_bytes(load_seg_npy, _VALID_SEG[:cut], "t_seg.npy")
    flipped = _VALID_SEG[:cut] + noise + _VALID_SEG[cut + len(noise) :]
    _load_bytes(load_seg_npy, flipped, "f_seg.npy")


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=5),
    st.binary(max_size=5), st.lists(st.integers(), max_size=3),
    st.builds(np.zeros, st.tuples(st.integers(0, 3), st.integers(0, 3))),
)  # fmt: skip
_KEYS = st.sampled_from(["masks", "img", "flows", "outlines", "ismanual", "chan_choose", "x"])


@FAST
@given(st.one_of(st.dictionaries(_KEYS, _VALUES, max_size=5), _VALUES))
def test_seg_npy_with_missing_or_odd_fields(content):
    dat = _load_bytes(load_seg_npy, _npy_bytes(content), "d_seg.npy")
    assert dat is None or (isinstance(dat, dict) and "masks" in dat)


@FAST
@given(
    st.sampled_from([np.int8, np.int32, np.int64, np.uint64, np.float32, np.float64, np.bool_]),
    st.sampled_from([0, 3, -1, 2**40, np.nan]),
    st.sampled_from(["a.tif", "a.png"]),
)
def test_odd_label_images_are_saved_or_refused_clearly(dtype, special, name):
    labels = np.zeros((6, 5))
    labels[1:3, 1:3] = 1
    labels[4, 4] = special
    try:
        labels = labels.astype(dtype)
    except (ValueError, OverflowError):
        return
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = save_masks(Path(folder) / name, labels)
        except (ValueError, TypeError) as err:
            assert "label" in str(err) or "mask" in str(err) or "png" in str(err), err
            return
        assert path.is_file()
