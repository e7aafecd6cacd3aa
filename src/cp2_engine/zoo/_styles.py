"""Style vectors of whole images, computed as in the Cellpose 2.0 paper's zoo.

Each image is normalised, resized so that its median object diameter becomes ``diam_mean``,
centre-cropped (or zero-padded) to 224 x 224 and run through the net once. Its style is the
net's second output: the L2-normalised global average pool of the bottleneck (256-d).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["CROP_SIZE", "center_crop", "compute_styles", "resolve_net", "style_input"]

CROP_SIZE = 224


def resolve_net(net_or_model):
    """Return the ``torch.nn.Module`` of a net or of an object holding one as ``.net``.

    Examples
    --------
    >>> from cp2_engine.network._net import CPnet
    >>> net = CPnet()
    >>> resolve_net(net) is net
    True
    """
    import torch

    net = getattr(net_or_model, "net", net_or_model)
    if not isinstance(net, torch.nn.Module):
        raise TypeError(
            f"expected a CPnet or a model with a .net attribute, got {type(net_or_model).__name__}"
        )
    return net


def center_crop(x: np.ndarray, *, size: int = CROP_SIZE) -> np.ndarray:
    """Centre-crop the last two axes to ``size``, zero-padding (centred) axes that are shorter.

    Examples
    --------
    >>> center_crop(np.ones((2, 300, 100)), size=224).shape
    (2, 224, 224)
    """
    out = x
    for axis in (-2, -1):
        n = out.shape[axis]
        if n >= size:
            start = (n - size) // 2
            out = np.take(out, np.arange(start, start + size), axis=axis)
        else:
            before = (size - n) // 2
            pad = [(0, 0)] * out.ndim
            pad[axis] = (before, size - n - before)
            out = np.pad(out, pad)
    return out


def _rescale_for(diameter, diam_mean: float, index: int) -> float:
    if diameter is None:
        return 1.0
    d = float(diameter)
    if not np.isfinite(d) or d <= 0:
        log.warning("image %d: diameter %r (no cells?): style computed without resizing", index, d)
        return 1.0
    return diam_mean / d


def style_input(
    image, *, diameter=None, diam_mean: float = 30.0, channels=(0, 0), index: int = 0
) -> np.ndarray:
    """Prepare one image for the style pass: ``(2, 224, 224)`` float32.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` or multichannel image.
    diameter : float, optional
        Median object diameter in pixels; None, 0 or NaN means "do not resize".
    diam_mean : float
        Diameter the net was trained at.
    channels : (int, int)
        Cellpose channels ``[chan, chan2]``.
    index : int
        Position of the image, for log messages.

    Returns
    -------
    numpy.ndarray

    Examples
    --------
    >>> style_input(np.ones((100, 120)), diameter=15, diam_mean=30).shape
    (2, 224, 224)
    """
    from cp2_engine.inference import convert_image, resize_image

    x = convert_image(image, channels=channels, normalize=True)
    rescale = _rescale_for(diameter, diam_mean, index)
    if rescale != 1.0:
        x = resize_image(x, rescale=rescale)
    return np.ascontiguousarray(center_crop(x), dtype=np.float32)


def _per_image_diameters(diameters, n: int) -> list:
    if diameters is None or np.isscalar(diameters):
        return [diameters] * n
    diameters = list(diameters)
    if len(diameters) != n:
        raise ValueError(f"expected {n} diameters (one per image), got {len(diameters)}")
    return diameters


def compute_styles(
    net_or_model,
    images: Sequence,
    *,
    diameters=None,
    diam_mean: float | None = 30.0,
    channels=(0, 0),
    batch_size: int = 8,
) -> np.ndarray:
    """Compute one 256-d style vector per image.

    Parameters
    ----------
    net_or_model : CPnet or Model
        The network (or a model holding it as ``.net``); it runs on its own device, in eval
        mode (its previous mode is restored).
    images : sequence of array_like
        Images of any size.
    diameters : float or sequence of float, optional
        Median object diameter of each image (or one for all). None, 0 or NaN: no resizing
        (for example an image with no cells; a warning is logged).
    diam_mean : float or None
        Diameter the images are resized to; None takes the net's ``diam_mean``.
    channels : (int, int)
        Cellpose channels ``[chan, chan2]``.
    batch_size : int
        Crops per forward pass.

    Returns
    -------
    numpy.ndarray
        ``(N, 256)`` float32 unit-length styles.

    Examples
    --------
    >>> from cp2_engine.network._net import CPnet
    >>> rng = np.random.default_rng(0)
    >>> imgs = [rng.random((64, 80)), rng.random((300, 250))]
    >>> s = compute_styles(CPnet(), imgs, diameters=[10, 40])
    >>> s.shape, bool(np.allclose(np.linalg.norm(s, axis=1), 1, atol=1e-5))
    ((2, 256), True)
    """
    net = resolve_net(net_or_model)
    if diam_mean is None:
        diam_mean = float(net.diam_mean.item())
    if len(images) == 0:
        raise ValueError("expected at least one image, got none")
    diams = _per_image_diameters(diameters, len(images))
    styles = []
    for start in range(0, len(images), max(1, int(batch_size))):
        batch = [
            style_input(
                images[i], diameter=diams[i], diam_mean=diam_mean, channels=channels, index=i
            )
            for i in range(start, min(start + batch_size, len(images)))
        ]
        styles.append(_forward_styles(net, np.stack(batch)))
    out = np.concatenate(styles)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _forward_styles(net, batch: np.ndarray) -> np.ndarray:
    import torch

    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            style = _style_only(net, torch.from_numpy(batch).to(device))
    finally:
        net.train(was_training)
    return style.float().cpu().numpy()


def _style_only(net, x):
    """The net's style output; a CPnet runs only its encoder (the decoder does not change it)."""
    if hasattr(net, "downsample") and hasattr(net, "make_style"):
        return net.make_style(net.downsample(x)[-1])
    return net(x)[1]
