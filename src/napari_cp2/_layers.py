"""Engine results <-> napari layer data: image preparation, output layers, names.

Pure functions (numpy and the engine), testable without a viewer. Flows are coloured by
the engine's :func:`cp2_engine.viz.flow_to_rgb`, the colouring of ``_seg.npy`` files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cp2_engine.viz import flow_to_rgb

from ._tooltips import message

__all__ = [
    "EngineImage",
    "diameter_from_shapes",
    "layer_names",
    "prepare_image",
    "segmentation_layers",
]

#: Suffixes of the layers made from one segmentation of an image layer.
SUFFIXES = {"masks": "_cp2_masks", "flows": "_cp2_flows", "cellprob": "_cp2_cellprob"}
#: Name suffix of a ground-truth labels layer (the samples' ``<image>_truth``).
TRUTH_SUFFIX = "_truth"


@dataclass(frozen=True)
class EngineImage:
    """A layer's data made ready for ``Model.segment``.

    Attributes
    ----------
    image : ndarray
        ``(H, W)`` or ``(H, W, C)`` (channels last); a z-stack is ``(Z, Y, X)`` or
        ``(Z, Y, X, C)``.
    channels : tuple of int
        Cellpose ``(chan, chan2)``.
    channel_axis : int or None
        The last axis for a multichannel image, None for a grayscale one.
    stack : bool
        Whether ``image`` is a z-stack (planes on axis 0).
    """

    image: np.ndarray
    channels: tuple[int, int]
    channel_axis: int | None
    stack: bool = False


def layer_names(image_name: str) -> dict[str, str]:
    """Names of the output layers for the image layer ``image_name``.

    Examples
    --------
    >>> layer_names("cells")["masks"]
    'cells_cp2_masks'
    """
    return {key: image_name + suffix for key, suffix in SUFFIXES.items()}


def _to_channels_last(data: np.ndarray, *, rgb: bool, channel_axis: int | None, name: str):
    if rgb:
        return data[..., :3] if data.shape[-1] == 4 else data
    if data.ndim == 2:
        return data
    if data.ndim == 3 and channel_axis is not None and -3 <= channel_axis < 3:
        return np.moveaxis(data, channel_axis, -1)
    raise ValueError(message("bad_ndim", name=name, shape=tuple(data.shape)))


def _stack_to_zyxc(data: np.ndarray, *, rgb: bool, channel_axis, z_axis, name: str):
    """A z-stack layer's data as ``(Z, Y, X)`` or ``(Z, Y, X, C)``."""
    if rgb and data.ndim == 4:
        data = data[..., :3] if data.shape[-1] == 4 else data
        return np.moveaxis(data, z_axis, 0) if z_axis else data
    if not rgb and data.ndim == 3 and channel_axis is None:
        return np.moveaxis(data, z_axis, 0) if z_axis else data
    if rgb or data.ndim != 4 or channel_axis is None or not -4 <= channel_axis < 4:
        raise ValueError(message("bad_stack", name=name, shape=tuple(data.shape)))
    c = channel_axis % 4
    spatial = [a for a in range(4) if a != c]
    z = spatial[0] if z_axis is None or z_axis % 4 == c else z_axis % 4
    rest = [a for a in spatial if a != z]
    return np.transpose(data, (z, *rest, c))


def _check_channel(img: np.ndarray, chan: int, name: str, stack: bool = False) -> None:
    nchan = 1 if img.ndim == 2 + stack else img.shape[-1]
    if chan > nchan or chan < 0:
        raise ValueError(message("bad_channel", chan=chan, name=name, nchan=nchan))
    if chan == 0:
        return
    plane = img if img.ndim == 2 + stack else img[..., chan - 1]
    if float(np.ptp(plane)) == 0.0:
        raise ValueError(message("empty_channel", chan=chan, name=name))


def prepare_image(
    data,
    *,
    name: str,
    rgb: bool = False,
    channel_axis: int | None = None,
    channels=(0, 0),
    stack: bool = False,
    z_axis: int | None = None,
) -> EngineImage:
    """Check a layer's data and return it as the engine expects it.

    Parameters
    ----------
    data : array-like
        The image layer's data.
    name : str
        Layer name (for messages).
    rgb : bool
        Whether napari shows the layer as RGB(A) (channels on the last axis).
    channel_axis : int, optional
        Channel axis of a 3-D non-RGB layer (None: the layer must be 2-D).
    channels : (int, int)
        Cellpose ``(chan, chan2)``: 0 = gray (mean), 1.. = channel number; chan2 0 = none.
    stack : bool
        Treat the layer as a z-stack: ``(Z, Y, X)``, RGB ``(Z, Y, X, 3|4)``, or 4-D with
        ``channel_axis``. The result is ``(Z, Y, X)`` or ``(Z, Y, X, C)``.
    z_axis : int, optional
        Axis of the planes in ``data`` (None: the first axis that is not the channel axis).

    Returns
    -------
    EngineImage

    Raises
    ------
    ValueError
        For a 3-D/4-D layer without channel axis (without ``stack``), a stack of the wrong
        shape, a channel that does not exist, or an empty (constant) channel.

    Examples
    --------
    >>> prepare_image(np.stack([np.ones((8, 8)), np.eye(8)]), name="x",
    ...               channel_axis=0, channels=(2, 0)).image.shape
    (8, 8, 2)
    >>> prepare_image(np.zeros((8, 2, 16, 16)), name="zcyx", channel_axis=1,
    ...               stack=True).image.shape
    (8, 16, 16, 2)
    """
    arr = np.asarray(data)
    if stack:
        img = _stack_to_zyxc(arr, rgb=rgb, channel_axis=channel_axis, z_axis=z_axis, name=name)
    else:
        img = _to_channels_last(arr, rgb=rgb, channel_axis=channel_axis, name=name)
    chan, chan2 = (int(c) for c in channels)
    _check_channel(img, chan, name, stack)
    if chan2:
        _check_channel(img, chan2, name, stack)
    gray = img.ndim == 2 + stack
    if gray and (chan, chan2) != (0, 0):
        chan, chan2 = 0, 0
    return EngineImage(img, (chan, chan2), None if gray else img.ndim - 1, stack)


def segmentation_layers(
    seg, *, image_name: str, scale=None, translate=None
) -> list[tuple[np.ndarray, dict, str]]:
    """Layer data tuples (masks, hidden flows, hidden cellprob) of one segmentation.

    For a z-stack the masks and cellprob are ``(Z, Y, X)`` and the flows layer is an RGB stack
    ``(Z, Y, X, 3)``: each plane's (dY, dX) flows coloured as in 2-D (dZ is not shown).

    Parameters
    ----------
    seg : Segmentation
        The engine result (``masks``, ``flows``, ``cellprob``, ``diameter``).
    image_name : str
        Name of the segmented image layer; the outputs are named after it.
    scale, translate : sequence of float, optional
        Spatial scale/translate of the image layer (the last two axes are used, the last three
        for a z-stack).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> seg = SimpleNamespace(masks=np.ones((4, 4), np.uint16), flows=np.zeros((2, 4, 4)),
    ...                       cellprob=np.zeros((4, 4)), diameter=12.0)
    >>> [t[0].shape for t in segmentation_layers(seg, image_name="a")]
    [(4, 4), (4, 4, 3), (4, 4)]
    """
    names = layer_names(image_name)
    masks = np.asarray(seg.masks)
    common = {}
    if scale is not None:
        common["scale"] = tuple(scale)[-masks.ndim :]
    if translate is not None:
        common["translate"] = tuple(translate)[-masks.ndim :]
    meta = {"cp2_image": image_name, "cp2_diameter": float(seg.diameter)}
    flows = np.asarray(seg.flows)
    if masks.ndim == 3:  # a z-stack: (dY, dX) of each plane, coloured per plane
        rgb = np.stack([flow_to_rgb(flows[-2:, z]) for z in range(masks.shape[0])])
    else:
        rgb = flow_to_rgb(flows)
    return [
        (masks, {"name": names["masks"], "metadata": dict(meta), **common}, "labels"),
        (
            rgb,
            {"name": names["flows"], "visible": False, "rgb": True, **common},
            "image",
        ),
        (
            np.asarray(seg.cellprob, dtype=np.float32),
            {"name": names["cellprob"], "visible": False, "colormap": "magma", **common},
            "image",
        ),
    ]


def diameter_from_shapes(shapes: list[np.ndarray]) -> float:
    """Mean diameter of cells outlined by shapes: mean bounding-box extent of each shape.

    Parameters
    ----------
    shapes : list of ndarray
        Vertex arrays ``(n_vertices, >=2)`` of a napari Shapes layer (last two columns y, x).

    Raises
    ------
    ValueError
        If there is no shape with a non-zero extent.

    Examples
    --------
    >>> diameter_from_shapes([np.array([[0, 0], [0, 10], [20, 10], [20, 0]])])
    15.0
    """
    sizes = []
    for verts in shapes:
        pts = np.asarray(verts, dtype=float)[:, -2:]
        extent = pts.max(axis=0) - pts.min(axis=0)
        if extent.min() > 0:
            sizes.append(extent.mean())
    if not sizes:
        raise ValueError(message("no_shapes_diameter"))
    return float(np.mean(sizes))
