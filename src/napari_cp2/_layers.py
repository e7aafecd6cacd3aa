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
        ``(H, W)`` or ``(H, W, C)`` (channels last).
    channels : tuple of int
        Cellpose ``(chan, chan2)``.
    channel_axis : int or None
        2 for a multichannel image, None for a grayscale one.
    """

    image: np.ndarray
    channels: tuple[int, int]
    channel_axis: int | None


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


def _check_channel(img: np.ndarray, chan: int, name: str) -> None:
    nchan = 1 if img.ndim == 2 else img.shape[-1]
    if chan > nchan or chan < 0:
        raise ValueError(message("bad_channel", chan=chan, name=name, nchan=nchan))
    if chan == 0:
        return
    plane = img if img.ndim == 2 else img[..., chan - 1]
    if float(np.ptp(plane)) == 0.0:
        raise ValueError(message("empty_channel", chan=chan, name=name))


def prepare_image(
    data, *, name: str, rgb: bool = False, channel_axis: int | None = None, channels=(0, 0)
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

    Returns
    -------
    EngineImage

    Raises
    ------
    ValueError
        For a 3-D/4-D layer without channel axis, a channel that does not exist, or an empty
        (constant) channel.

    Examples
    --------
    >>> prepare_image(np.stack([np.ones((8, 8)), np.eye(8)]), name="x",
    ...               channel_axis=0, channels=(2, 0)).image.shape
    (8, 8, 2)
    """
    arr = np.asarray(data)
    img = _to_channels_last(arr, rgb=rgb, channel_axis=channel_axis, name=name)
    chan, chan2 = (int(c) for c in channels)
    _check_channel(img, chan, name)
    if chan2:
        _check_channel(img, chan2, name)
    if img.ndim == 2 and (chan, chan2) != (0, 0):
        chan, chan2 = 0, 0
    return EngineImage(img, (chan, chan2), 2 if img.ndim == 3 else None)


def segmentation_layers(
    seg, *, image_name: str, scale=None, translate=None
) -> list[tuple[np.ndarray, dict, str]]:
    """Layer data tuples (masks, hidden flows, hidden cellprob) of one segmentation.

    Parameters
    ----------
    seg : Segmentation
        The engine result (``masks``, ``flows``, ``cellprob``, ``diameter``).
    image_name : str
        Name of the segmented image layer; the outputs are named after it.
    scale, translate : sequence of float, optional
        Spatial scale/translate of the image layer (last two axes are used).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> seg = SimpleNamespace(masks=np.ones((4, 4), np.uint16), flows=np.zeros((2, 4, 4)),
    ...                       cellprob=np.zeros((4, 4)), diameter=12.0)
    >>> [t[0].shape for t in segmentation_layers(seg, image_name="a")]
    [(4, 4), (4, 4, 3), (4, 4)]
    """
    names = layer_names(image_name)
    common = {}
    if scale is not None:
        common["scale"] = tuple(scale)[-2:]
    if translate is not None:
        common["translate"] = tuple(translate)[-2:]
    meta = {"cp2_image": image_name, "cp2_diameter": float(seg.diameter)}
    masks = np.asarray(seg.masks)
    return [
        (masks, {"name": names["masks"], "metadata": dict(meta), **common}, "labels"),
        (
            flow_to_rgb(seg.flows),
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
