"""Fuzzing the files users hand us: random or truncated bytes, ``_seg.npy`` dicts with missing
or wrongly typed fields, odd label images. Each gives a result or a clear ValueError /
TypeError / FileNotFoundError, never a crash, a hang or executed code."""

from __future__ import annotations

import io as pyio
import tempfile
from pathlib import Path

import numpy as np
import pytest
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


# --------------------------------------------------------------------------- model files
def _small_state() -> dict:
    import torch

    from cp2_engine.network import CPnet

    torch.manual_seed(0)
    return {k: v.clone() for k, v in CPnet(nbase=[2, 4, 8, 16, 32]).state_dict().items()}


_STATE = None
_SHAPES = st.lists(st.integers(0, 5), max_size=5).map(tuple)


@st.composite
def _mutated_states(draw):
    import torch

    global _STATE
    if _STATE is None:
        _STATE = _small_state()
    state = dict(_STATE)
    keys = sorted(state)
    keys += [
        k
        for k in keys
        if k.endswith("conv_0.2.weight") or k in ("output.2.weight", "diam_mean", "diam_labels")
    ] * 20  # the keys that define the architecture
    for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        if draw(st.booleans()):
            del state[key]  # missing keys
        else:
            state[key] = torch.zeros(draw(_SHAPES))  # a wrong shape (or rank)
    extra = draw(st.lists(st.sampled_from(
        ["W2", "encoder.patch_embed.proj.weight", "extra.weight", "output.3.weight", "", "7"]
    ), max_size=2, unique=True))  # fmt: skip
    for key in extra:
        state[key] = torch.zeros(draw(_SHAPES))
    return state


@FAST
@given(_mutated_states())
def test_model_files_with_wrong_shapes_or_keys(state):
    import torch

    from cp2_engine.network import ModelFileError, build_net_from_state

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model"
        torch.save(state, path)
        try:
            loaded = load_state_dict(path)
        except ModelFileError as err:
            assert str(path) in str(err), err
            if "W2" in state or any(k.startswith("encoder.") for k in state):
                assert "Cellpose-4" in str(err), err
            return
        build_net_from_state(loaded)  # what loads also builds a network


# --------------------------------------------------------------------------- zarr inputs
_ZARR_DTYPES = st.sampled_from(["uint8", "uint16", "int32", "float32", "float64", "bool",
                                "complex64", "int8"])  # fmt: skip


@st.composite
def _zarr_arrays(draw, max_side=24):
    shape = draw(st.lists(st.integers(0, max_side), min_size=1, max_size=4).map(tuple))
    chunks = tuple(draw(st.integers(1, max(1, s + 2))) for s in shape)
    return np.dtype(draw(_ZARR_DTYPES)), shape, chunks


def _write_zarr(folder: Path, spec) -> Path:
    import zarr

    dtype, shape, chunks = spec
    path = folder / "image.zarr"
    arr = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype=dtype)
    if arr.size:
        arr[...] = (np.arange(arr.size).reshape(shape) % 7).astype(dtype)
    return path


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(_zarr_arrays(), st.sampled_from([False, True, None]))
def test_zarr_images_are_read_as_stored(spec, lazy):
    from cp2_engine.io import imread

    with tempfile.TemporaryDirectory() as folder:
        path = _write_zarr(Path(folder), spec)
        got = np.asarray(imread(path, lazy=lazy))
        assert got.shape == spec[1] and got.dtype == spec[0]  # the documented result


_LARGE = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                           dashboard_address=None)  # fmt: skip
    with Client(cluster) as c:
        yield c
    cluster.close()


@_LARGE
@given(spec=_zarr_arrays(max_side=90))
def test_zarr_inputs_of_segment_large(client, spec):
    """Odd chunks, 1-D to 4-D, empty, bool/complex: labels of the image's shape, or a clear
    ValueError/TypeError before any block runs."""
    from cp2_engine.inference import ClassicSegmenter
    from cp2_engine.large import segment_large

    with tempfile.TemporaryDirectory() as folder:
        path = _write_zarr(Path(folder), spec)
        try:
            result = segment_large(str(path), model=ClassicSegmenter(threshold=0.25),
                                   diameter=10, out=Path(folder) / "out.zarr", blocksize=64,
                                   cluster=client)  # fmt: skip
        except (ValueError, TypeError) as err:
            assert "image" in str(err) or "dtype" in str(err) or "shape" in str(err), err
            return
        import zarr

        assert result is not None
        assert zarr.open_array(str(Path(folder) / "out.zarr")).shape == spec[1][:2]
