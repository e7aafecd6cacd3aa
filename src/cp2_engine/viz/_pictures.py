"""Pictures of segmentations as arrays and pngs: flow colouring, mask outlines, overlays.

The one flow colouring of cp2: the ``_seg.npy`` writer (io) and the napari plugin both call
:func:`flow_to_rgb`, so a file and the GUI show the same colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cp2_engine.util import atomic_write

__all__ = ["flow_to_rgb", "masks_outlines", "overlay_png", "scale_to_uint8"]


def flow_to_rgb(dP) -> np.ndarray:
    """Colour a ``(2, H, W)`` (dY, dX) flow field: hue = direction, brightness = magnitude.

    Brightness is the magnitude divided by its 99th percentile (clipped to 1); zero flows are
    black.

    Parameters
    ----------
    dP : array_like
        ``(2, H, W)`` flows ordered (dY, dX).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.

    Raises
    ------
    ValueError
        If ``dP`` is not ``(2, H, W)``.

    Examples
    --------
    >>> rgb = flow_to_rgb(np.ones((2, 4, 4), np.float32))
    >>> rgb.shape, rgb.dtype
    ((4, 4, 3), dtype('uint8'))
    """
    from skimage.color import hsv2rgb

    dP = np.asarray(dP, dtype=np.float32)
    if dP.ndim != 3 or dP.shape[0] != 2:
        raise ValueError(f"flows must be (2, H, W) (dY, dX), got shape {dP.shape}")
    mag = np.hypot(dP[0], dP[1])
    hi = np.percentile(mag, 99) if mag.size else 0.0
    value = np.clip(mag / hi, 0, 1) if hi > 0 else np.zeros_like(mag)
    hue = (np.arctan2(dP[0], dP[1]) + np.pi) / (2 * np.pi)
    hsv = np.stack([hue, np.ones_like(hue), value], axis=-1)
    return (hsv2rgb(hsv) * 255).round().astype(np.uint8)


def scale_to_uint8(x) -> np.ndarray:
    """Scale an array between its 1st and 99th percentile to uint8 0..255 (clipped).

    A constant array becomes all zeros.

    Examples
    --------
    >>> scale_to_uint8(np.arange(101.0))[[0, 50, 100]].tolist()
    [0, 127, 255]
    """
    x = np.asarray(x, dtype=np.float32)
    lo, hi = np.percentile(x, (1, 99)) if x.size else (0.0, 0.0)
    scaled = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def masks_outlines(masks) -> np.ndarray:
    """Label image of the inner boundary pixels of each mask (Cellpose ``outlines`` key).

    Examples
    --------
    >>> m = np.zeros((5, 5), np.uint16)
    >>> m[1:4, 1:4] = 2
    >>> int((masks_outlines(m) == 2).sum())
    8
    """
    from skimage.segmentation import find_boundaries

    masks = np.asarray(masks)
    return np.where(find_boundaries(masks, mode="inner"), masks, 0).astype(masks.dtype)


def _display_rgb(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (2, 3) and image.shape[1:] == shape:
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 2:
        image = image[..., np.newaxis]
    if image.ndim != 3 or image.shape[:2] != shape:
        raise ValueError(f"image shape {image.shape} does not match masks {shape}")
    channels = [scale_to_uint8(image[..., c]) for c in range(min(image.shape[-1], 3))]
    while len(channels) < 3:
        channels.append(channels[0] if image.shape[-1] == 1 else np.zeros_like(channels[0]))
    return np.stack(channels, axis=-1)


def overlay_png(path, image, masks, *, color=(255, 0, 0), overwrite: bool = True) -> Path:
    """Save the image (percentile-scaled to 8 bit) as a png with mask outlines drawn on it.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.png``.
    image : numpy.ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` image (first 3 channels shown).
    masks : numpy.ndarray
        ``(H, W)`` integer label image.
    color : tuple of int, optional
        RGB colour of the outlines. Default red.
    overwrite : bool, optional
        Replace an existing file. Default True.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If ``path`` is not a ``.png``, or the image does not match the masks.
    TypeError
        If ``masks`` is not an integer label image.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import imageio.v3 as iio
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "overlay.png"
    >>> m = np.zeros((6, 6), np.uint16)
    >>> m[1:5, 1:5] = 1
    >>> iio.imread(overlay_png(p, np.ones((6, 6)), m)).shape
    (6, 6, 3)
    """
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"overlays are written as .png, got {path.name!r}")
    masks = np.asarray(masks)
    if not np.issubdtype(masks.dtype, np.integer):
        raise TypeError(f"masks must be an integer label image, got dtype {masks.dtype}")
    rgb = _display_rgb(image, masks.shape)
    rgb[masks_outlines(masks) > 0] = np.asarray(color, dtype=np.uint8)
    with atomic_write(path, overwrite=overwrite) as tmp:
        iio.imwrite(tmp, rgb, extension=".png")
    return path
