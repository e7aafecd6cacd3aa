"""Bad-input fuzzing: public functions return a valid result or raise ValueError/TypeError.

Random shapes (0-D to 4-D, including empty and tiny), dtypes and values (NaN, inf, constant).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cp2_engine.inference import Model, convert_image
from cp2_engine.inference._transforms import normalize99
from cp2_engine.metrics import average_precision
from cp2_engine.postprocess import compute_masks, masks_to_flows

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_DTYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64, np.bool_]
)


@st.composite
def arrays(draw, min_dims=0, max_dims=4, max_side=12, dtypes=_DTYPES):
    dtype = np.dtype(draw(dtypes))
    shape = draw(
        hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=max_side)
    )
    elements = None
    if dtype.kind == "f":
        finite = st.floats(-1e6, 1e6, width=dtype.itemsize * 8)
        elements = st.one_of(finite, st.sampled_from([np.nan, np.inf, -np.inf]))
    arr = draw(hnp.arrays(dtype, shape, elements=elements))
    if draw(st.booleans()) and arr.size:
        arr[...] = arr.flat[0]  # constant image
    return arr


def _ok_or_clear_error(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as err:
        assert str(err), f"{type(err).__name__} without a message"
        return None


@FUZZ
@given(arrays())
def test_normalize99(img):
    out = _ok_or_clear_error(normalize99, img)
    if out is not None:
        assert out.shape == img.shape and out.dtype == np.float32
        assert np.isfinite(out).all()


@FUZZ
@given(arrays(), st.tuples(st.integers(-1, 4), st.integers(-1, 4)))
def test_convert_image(img, channels):
    out = _ok_or_clear_error(convert_image, img, channels=channels, normalize=True)
    if out is not None:
        assert out.ndim == 3 and out.shape[0] == 2 and out.dtype == np.float32
        assert np.isfinite(out).all()


@FUZZ
@given(arrays(min_dims=1, max_dims=3, max_side=20), arrays(min_dims=1, max_dims=3, max_side=20))
def test_compute_masks(dp, cellprob):
    out = _ok_or_clear_error(compute_masks, dp, cellprob)
    if out is not None:
        assert out.shape == np.shape(cellprob) and out.dtype.kind == "u"


@FUZZ
@given(arrays(min_dims=1, max_dims=3, max_side=16))
def test_masks_to_flows(masks):
    out = _ok_or_clear_error(masks_to_flows, masks)
    if out is not None:
        assert out.shape == (2, *masks.shape) and np.isfinite(out).all()


@FUZZ
@given(arrays(max_dims=3), arrays(max_dims=3))
def test_average_precision(true, pred):
    out = _ok_or_clear_error(average_precision, true, pred)
    if out is not None:
        assert out.ap.shape == (1, 3)
        assert np.all((out.ap >= 0) & (out.ap <= 1))


@pytest.fixture(scope="module")
def model():
    return Model.random(seed=0)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    img=arrays(max_side=24),
    diameter=st.one_of(st.none(), st.floats(-5, 200), st.sampled_from([0.0, np.nan, np.inf])),
    channels=st.tuples(st.integers(0, 3), st.integers(0, 3)),
)
def test_model_segment(model, img, diameter, channels):
    seg = _ok_or_clear_error(model.segment, img, diameter=diameter, channels=channels)
    if seg is not None:
        assert seg.masks.shape == seg.cellprob.shape == seg.flows.shape[1:]
        assert seg.flows.shape[0] == 2
        assert np.isfinite(seg.flows).all()
