"""Image preparation for the network: channel selection, percentile normalisation, resizing.

The network input is always float32 ``(2, H, W)`` = [channel to segment, nuclear channel or 0].
Channels follow the Cellpose ``[chan, chan2]`` convention (see :func:`convert_image`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from cp2_engine.inference._config import _check_channels

__all__ = ["check_image", "convert_image", "fit_channels", "normalize99", "resize_image"]

logger = logging.getLogger(__name__)

MIN_RANGE = 1e-3  # percentile range below which a channel counts as constant (as in Cellpose)
_MAX_CHANNELS = 10  # an axis shorter than this may be a channel axis


def check_image(image, *, name: str = "image") -> np.ndarray:
    """Return ``image`` as a numeric numpy array or raise a clear error.

    Parameters
    ----------
    image : array_like
        Any real-valued array (bool, integer or float).
    name : str
        Name used in error messages.

    Returns
    -------
    numpy.ndarray
        The same data (no copy when already an array).

    Raises
    ------
    TypeError
        If the data is not real-valued numbers (complex, object, strings).
    ValueError
        If the array is empty or holds NaN or infinite values.

    Examples
    --------
    >>> check_image(np.zeros((2, 3))).shape
    (2, 3)
    """
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers (int or float), got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); expected a 2-D or 3-D image")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values; expected finite intensities")
    return arr


def normalize99(img, *, lower: float = 1, upper: float = 99, warn: bool = True) -> np.ndarray:
    """Scale an image so that its ``lower`` and ``upper`` percentiles map to 0 and 1.

    The whole array is treated as one channel (call it per channel for multi-channel data).
    If the percentile range is below 1e-3 (a constant or almost constant image) the result is
    all zeros and a warning is logged, as in Cellpose.

    Parameters
    ----------
    img : array_like
        Real-valued image of any shape.
    lower, upper : float
        Percentiles in [0, 100] with ``lower < upper``.
    warn : bool
        Log a warning for a constant image.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape.

    Examples
    --------
    >>> x = normalize99(np.arange(101.0), lower=1, upper=99)
    >>> float(x[1]), float(x[99])
    (0.0, 1.0)
    >>> normalize99(np.full((4, 4), 7)).max()
    np.float32(0.0)
    """
    arr = check_image(img)
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
    x = arr.astype(np.float32, copy=True)
    lo, hi = np.percentile(x, [lower, upper])
    if hi - lo <= MIN_RANGE:
        if warn:
            logger.warning("constant image/channel (percentile range %.3g): set to 0", hi - lo)
        x[...] = 0
        return x
    x -= np.float32(lo)
    x *= np.float32(1.0 / (hi - lo))
    return x


def _squeeze_to_image(arr: np.ndarray, channel_axis: int | None) -> tuple[np.ndarray, int | None]:
    """Drop singleton axes (keeping a declared channel axis) and return (array, channel_axis)."""
    if channel_axis is not None:
        if not -arr.ndim <= channel_axis < arr.ndim:
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for an image of shape {arr.shape}"
            )
        channel_axis %= arr.ndim
        arr = np.moveaxis(arr, channel_axis, -1)
        keep = [n for n in range(arr.ndim - 1) if arr.shape[n] != 1]
        return arr.reshape([arr.shape[n] for n in keep] + [arr.shape[-1]]), -1
    if arr.ndim > 2:
        arr = arr.reshape([s for s in arr.shape if s != 1] or [1])
    return arr, None


def _to_hwc(image, channel_axis: int | None) -> np.ndarray:
    """Return an ``(H, W, C)`` view of a 2-D or 3-D image."""
    arr = check_image(image)
    arr, channel_axis = _squeeze_to_image(arr, channel_axis)
    if channel_axis is None and arr.ndim == 3:
        smallest = int(np.argmin(arr.shape))
        if arr.shape[smallest] >= _MAX_CHANNELS:
            raise ValueError(
                f"cannot find a channel axis in an image of shape {arr.shape}: no axis is "
                f"shorter than {_MAX_CHANNELS}; this looks like a 3-D stack (not supported) -- "
                "pass channel_axis= for a multi-channel 2-D image"
            )
        arr = np.moveaxis(arr, smallest, -1)
    elif arr.ndim == 2 and channel_axis is None:
        arr = arr[..., None]
    if arr.ndim != 3 or min(arr.shape[:2]) < 2:
        raise ValueError(
            "expected a 2-D image (H, W) or a 2-D multi-channel image (H, W, C) with H, W >= 2, "
            f"got shape {np.shape(image)}"
        )
    return arr


def _pick_channel(hwc: np.ndarray, chan: int, *, what: str) -> np.ndarray:
    nchan = hwc.shape[-1]
    if chan > nchan:
        raise ValueError(
            f"{what}={chan} asks for channel {chan} (1-based) but the image has only {nchan} "
            f"channel(s) (shape {hwc.shape}, channels last)"
        )
    return hwc[..., chan - 1]


def convert_image(
    image,
    *,
    channels=(0, 0),
    channel_axis: int | None = None,
    normalize: bool = False,
    invert: bool = False,
) -> np.ndarray:
    """Turn a user image into the network input ``(2, H, W)`` float32.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` grey image, or ``(H, W, C)`` / ``(C, H, W)`` with ``C < 10`` channels
        (singleton axes are dropped first).
    channels : (int, int)
        Cellpose ``[chan, chan2]``: ``chan`` = channel to segment (0 = mean of all channels,
        1 = red/first, 2 = green/second, 3 = blue/third, ...); ``chan2`` = nuclear channel
        (0 = none, giving a zero second channel).
    channel_axis : int or None
        Axis holding the channels; None detects it (the smallest axis, if shorter than 10).
    normalize : bool
        Apply :func:`normalize99` to each used channel (a constant channel becomes 0 with a
        logged warning).
    invert : bool
        Return ``1 - x`` for the segmented channel (after normalisation).

    Returns
    -------
    numpy.ndarray
        float32 ``(2, H, W)``.

    Raises
    ------
    ValueError
        Wrong number of dimensions, no recognisable channel axis, a channel that the image does
        not have, NaN/inf values, or an empty image.
    TypeError
        Non-numeric data.

    Examples
    --------
    >>> rgb = np.zeros((32, 48, 3), np.uint8)
    >>> convert_image(rgb, channels=(2, 3)).shape
    (2, 32, 48)
    >>> convert_image(np.ones((16, 16))).shape
    (2, 16, 16)
    """
    chan, chan2 = _check_channels(channels)
    hwc = _to_hwc(image, channel_axis)
    out = np.zeros((2, *hwc.shape[:2]), np.float32)
    if chan == 0:
        out[0] = hwc.mean(axis=-1, dtype=np.float64) if hwc.shape[-1] > 1 else hwc[..., 0]
    else:
        out[0] = _pick_channel(hwc, chan, what="chan")
    if chan2 > 0:
        out[1] = _pick_channel(hwc, chan2, what="chan2")
    if normalize:
        out[0] = normalize99(out[0])
        if chan2 > 0:
            out[1] = normalize99(out[1])
    if invert:
        out[0] = 1.0 - out[0]
    return out


def fit_channels(x: np.ndarray, nchan: int) -> np.ndarray:
    """Give a ``(2, H, W)`` network input the ``nchan`` channels a network expects.

    Fewer channels keep the first ones; more are filled with zeros.

    Examples
    --------
    >>> fit_channels(np.ones((2, 4, 4), np.float32), 3).shape
    (3, 4, 4)
    """
    if nchan < 2:
        return x[:nchan]
    if nchan > 2:
        return np.concatenate([x, np.zeros((nchan - 2, *x.shape[1:]), np.float32)])
    return x


def _target_shape(shape: tuple[int, int], shape_out, rescale) -> tuple[int, int]:
    if (shape_out is None) == (rescale is None):
        raise ValueError("give exactly one of shape= (H, W) or rescale= (a positive factor)")
    if shape_out is not None:
        out = tuple(int(s) for s in shape_out)
        if len(out) != 2:
            raise ValueError(f"shape must be (H, W), got {shape_out!r}")
    else:
        if not np.isfinite(rescale) or rescale <= 0:
            raise ValueError(f"rescale must be a positive finite number, got {rescale!r}")
        out = (int(shape[0] * rescale), int(shape[1] * rescale))
    if min(out) < 1:
        raise ValueError(f"resized image would be empty: {shape} -> {out}")
    return out


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    # pixel centres aligned, like the bilinear resize of the images: output pixel i takes the
    # source pixel under its centre. (OpenCV's INTER_NEAREST takes floor(i * n_in / n_out), which
    # shifts labels ~half a pixel off their resized image.)
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out)
    return np.minimum(centres.astype(np.int64), n_in - 1)


def resize_image(
    img, *, shape=None, rescale: float | None = None, interpolation: str = "linear"
) -> np.ndarray:
    """Resize the last two axes of ``img``.

    Parameters
    ----------
    img : array_like
        ``(H, W)`` or ``(C, H, W)``.
    shape : (int, int), optional
        Output ``(H, W)``.
    rescale : float, optional
        Factor; the output is ``(int(H * rescale), int(W * rescale))`` (as in Cellpose).
    interpolation : {"linear", "nearest"}
        ``"linear"``: bilinear with pixel-centre alignment and no anti-aliasing (the same as
        OpenCV ``INTER_LINEAR``), output float32. ``"nearest"``: exact index lookup that keeps
        the dtype (use it for labels).

    Returns
    -------
    numpy.ndarray

    Examples
    --------
    >>> resize_image(np.zeros((3, 10, 20)), rescale=0.5).shape
    (3, 5, 10)
    >>> resize_image(np.arange(4).reshape(2, 2), shape=(4, 4), interpolation="nearest")[0]
    array([0, 0, 1, 1])
    """
    arr = check_image(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"resize_image expects (H, W) or (C, H, W), got shape {arr.shape}")
    out_shape = _target_shape(arr.shape[-2:], shape, rescale)
    if out_shape == arr.shape[-2:]:
        return arr.astype(np.float32) if interpolation == "linear" else arr.copy()
    if interpolation == "nearest":
        iy = _nearest_indices(arr.shape[-2], out_shape[0])
        ix = _nearest_indices(arr.shape[-1], out_shape[1])
        return arr[..., iy[:, None], ix[None, :]]
    if interpolation != "linear":
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    t = t.reshape(1, -1, *arr.shape[-2:])
    with torch.inference_mode():
        out = F.interpolate(t, size=out_shape, mode="bilinear", align_corners=False)
    return out.reshape(*arr.shape[:-2], *out_shape).numpy()
