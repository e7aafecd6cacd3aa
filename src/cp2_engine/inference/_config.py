"""Inference settings: every default of ``Model.segment`` is documented once, here.

The training settings live with the training code (``cp2_engine.training.TrainConfig``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cp2_engine.network import BACKENDS, PRECISIONS

__all__ = ["SegmentConfig", "resolve_niter"]

_INTERPOLATION_DEFAULT_NITER = 200


def _check_channels(channels) -> tuple[int, int]:
    try:
        chan, chan2 = channels
    except (TypeError, ValueError):
        raise ValueError(
            f"channels must be a pair [chan, chan2] of integers, got {channels!r}"
        ) from None
    for value in (chan, chan2):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(
                "channels must hold non-negative integers (0 = grey / none, 1 = red, 2 = green, "
                f"3 = blue, ...), got {channels!r}"
            )
    return int(chan), int(chan2)


@dataclass(frozen=True)
class SegmentConfig:
    """Settings of one segmentation run (frozen; change with :func:`dataclasses.replace`).

    Parameters
    ----------
    diameter : float or None
        Expected cell diameter in pixels of the input image. None (or 0) estimates it with the
        model's size model if it has one, else uses the model's ``diam_labels`` (or ``diam_mean``
        when the model was never trained). The image is resized by ``diam_mean / diameter``.
    channels : (int, int)
        ``[chan, chan2]`` as in Cellpose: ``chan`` is the channel to segment (0 = mean of all
        channels, 1 = red / first, 2 = green / second, 3 = blue / third, ...); ``chan2`` is the
        optional nuclear channel (0 = none, 1/2/3 = R/G/B).
    channel_axis : int or None
        Axis of the channels in the input image; None detects it (the smallest axis < 10).
    flow_threshold : float
        Drop masks whose flow error (mean squared difference between the mask's own flows and the
        predicted flows) exceeds this; 0 disables the check (much faster).
    cellprob_threshold : float
        Pixels with a cell-probability logit above this are foreground.
    min_size : int
        Masks with fewer pixels are removed (after hole filling); <= 0 disables.
    max_size_fraction : float
        Masks larger than this fraction of the image are removed.
    niter : int or None
        Euler steps of the flow dynamics. None = 200, or ``round(200 / rescale)`` when the
        network ran on a downsampled image and its output was resized back (``resample=True``
        and ``rescale < 1``), so that large cells still converge; see :func:`resolve_niter`.
    augment : bool
        Test-time augmentation: tiles overlap by 50% and are flipped, outputs are averaged.
    tile_overlap : float
        Fraction of overlap between 224-px tiles (clamped to [0.05, 0.5] like Cellpose).
    batch_size : int
        Number of tiles per network forward pass.
    bsize : int
        Tile size in pixels (multiple of 16).
    resample : bool
        Resize the network output back to the original size before computing masks (smoother
        outlines). False computes masks at the network scale and resizes the masks.
    normalize : bool
        Scale each channel so that its 1st and 99th percentiles map to 0 and 1.
    invert : bool
        Invert the image intensities (``1 - x`` after normalisation).
    precision : {"auto", "fp32", "bf16", "fp16"}
        Precision of the network (:func:`cp2_engine.network.resolve_precision`, the one policy
        of inference and training). ``"auto"`` (default) is bfloat16 on a CPU that computes it
        natively (AVX-512 BF16 / AMX) and on CUDA, float32 elsewhere; ``"fp32"`` is the exact
        path. bf16 masks agree with fp32 masks (``docs/benchmarks.md``).
    backend : {"auto", "torch", "openvino"}
        What runs the network (:func:`cp2_engine.network.resolve_backend`): ``"auto"``
        (default) is OpenVINO on the CPU where it is installed, torch elsewhere. Both give the
        same outputs to ~1e-5 at fp32.
    channels_last : bool or None
        Torch backend: run the network in the channels-last memory format (same values to float
        rounding; converts the model's weights in place once). None (default) means on the CPU
        only, where oneDNN's channels-last convolutions are faster.
    device : str
        Torch device used by the command line to load a model ("auto", "cpu", "cuda", "mps").
        ``Model.segment`` always runs on the device its model was loaded on.
    do_3d : bool
        Segment a z-stack in 3-D: the network runs on every YX, ZY and ZX plane, the three
        predictions are combined into 3-D flows (dZ, dY, dX) and cell probability, then 3-D
        dynamics and clustering (no flow-error check in 3-D). The image must be ``(Z, Y, X)`` or
        a 4-D stack with channels (see ``z_axis`` / ``channel_axis``). The stack is normalised
        as a whole. No size-model estimate: ``diameter`` or the model's default is used.
    anisotropy : float or None
        With ``do_3d``: z step divided by the xy pixel size (2.0 when planes are twice as far
        apart as pixels); Z is resized by this factor for the network. None means 1.0.
    stitch_threshold : float
        If > 0 (and not ``do_3d``): segment every plane of a stack in 2-D and link masks of
        consecutive planes whose IoU is at least this into one 3-D object (Cellpose's stitching;
        ``min_size`` then counts voxels of the stitched objects).
    flow3d_smooth : float
        With ``do_3d``: standard deviation (voxels) of a Gaussian smoothing of the 3-D flows
        before the dynamics; 0 disables.
    z_axis : int or None
        Axis of the planes in a stack; None means axis 0.

    Examples
    --------
    >>> cfg = SegmentConfig(diameter=17.0, channels=(2, 1))
    >>> cfg.flow_threshold
    0.4
    """

    diameter: float | None = None
    channels: tuple[int, int] = (0, 0)
    channel_axis: int | None = None
    flow_threshold: float = 0.4
    cellprob_threshold: float = 0.0
    min_size: int = 15
    max_size_fraction: float = 0.4
    niter: int | None = None
    augment: bool = False
    tile_overlap: float = 0.1
    batch_size: int = 8
    bsize: int = 224
    resample: bool = True
    normalize: bool = True
    invert: bool = False
    precision: str = "auto"
    backend: str = "auto"
    channels_last: bool | None = None
    device: str = "auto"
    do_3d: bool = False
    anisotropy: float | None = None
    stitch_threshold: float = 0.0
    flow3d_smooth: float = 0.0
    z_axis: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", _check_channels(self.channels))
        self._check_numbers()
        if self.bsize < 16 or self.bsize % 16:
            raise ValueError(f"bsize must be a positive multiple of 16, got {self.bsize!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if self.niter is not None and self.niter < 1:
            raise ValueError(f"niter must be None (automatic) or >= 1, got {self.niter!r}")
        if not 0.0 <= self.tile_overlap <= 0.5:
            raise ValueError(f"tile_overlap must lie in [0, 0.5], got {self.tile_overlap!r}")
        if not 0.0 < self.max_size_fraction <= 1.0:
            raise ValueError(
                f"max_size_fraction must lie in (0, 1], got {self.max_size_fraction!r}"
            )
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string such as 'auto', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        self._check_stack_options()

    def _check_stack_options(self) -> None:
        if not isinstance(self.do_3d, bool | np.bool_):
            raise TypeError(f"do_3d must be True or False, got {self.do_3d!r}")
        if self.anisotropy is not None and not (
            isinstance(self.anisotropy, int | float) and 0 < self.anisotropy < math.inf
        ):
            raise ValueError(
                f"anisotropy must be None or a positive number, got {self.anisotropy!r}"
            )
        if not 0.0 <= self.stitch_threshold <= 1.0:
            raise ValueError(
                "stitch_threshold must lie in [0, 1] (0 = no stitching), "
                f"got {self.stitch_threshold!r}"
            )
        if self.do_3d and self.stitch_threshold > 0:
            raise ValueError("use either do_3d=True or stitch_threshold > 0, not both")
        if not 0.0 <= self.flow3d_smooth < math.inf:
            raise ValueError(f"flow3d_smooth must be >= 0 (0 = off), got {self.flow3d_smooth!r}")
        if self.z_axis is not None and not isinstance(self.z_axis, int):
            raise TypeError(f"z_axis must be None or an int, got {self.z_axis!r}")

    def _check_numbers(self) -> None:
        if self.diameter is not None and (not math.isfinite(self.diameter) or self.diameter < 0):
            raise ValueError(
                f"diameter must be None, 0 (estimate) or a positive number, got {self.diameter!r}"
            )
        for name in ("flow_threshold", "cellprob_threshold", "tile_overlap", "max_size_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if self.flow_threshold < 0:
            raise ValueError(
                f"flow_threshold must be >= 0 (0 disables), got {self.flow_threshold!r}"
            )
        if self.channel_axis is not None and not isinstance(self.channel_axis, int):
            raise TypeError(f"channel_axis must be None or an int, got {self.channel_axis!r}")


def resolve_niter(niter: int | None, *, rescale: float, resample: bool) -> int:
    """Number of Euler steps actually used for a run.

    Parameters
    ----------
    niter : int or None
        The configured value; an int is returned unchanged.
    rescale : float
        ``diam_mean / diameter``: the factor the image was resized by for the network.
    resample : bool
        Whether the network output was resized back to the original size.

    Returns
    -------
    int
        ``niter`` if given; else ``round(200 / rescale)`` when ``resample`` and ``rescale < 1``
        (cells are larger in pixels than the network saw them), otherwise 200.

    Examples
    --------
    >>> resolve_niter(None, rescale=0.5, resample=True)
    400
    >>> resolve_niter(None, rescale=2.0, resample=True)
    200
    """
    if niter is not None:
        return int(niter)
    if resample and 0 < rescale < 1:
        return round(_INTERPOLATION_DEFAULT_NITER / rescale)
    return _INTERPOLATION_DEFAULT_NITER
