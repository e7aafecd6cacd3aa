"""Inference orchestration: a loaded network (+ optional size model) that segments images.

``Model.segment`` runs: channel selection and normalisation -> resize by
``rescale = diam_mean / diameter`` -> tiled network -> resize the output back -> flows to masks.
Nothing here is an algorithm of its own; each step lives in its module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Generator, Iterable, Iterator

import numpy as np
import torch

from cp2_engine.inference._config import SegmentConfig, resolve_niter
from cp2_engine.inference._estimate import estimate_and_segment
from cp2_engine.inference._planes import PlaneProgress
from cp2_engine.inference._protocol import SegmentProgress, iter_segment_many
from cp2_engine.inference._segment3d import iter_segment_stack, masks_from_stack_flows
from cp2_engine.inference._segmentation import Segmentation, _Timer
from cp2_engine.inference._tiling import run_tiled
from cp2_engine.inference._transforms import convert_image, fit_channels, resize_image
from cp2_engine.network import get_runner, resolve_device, use_channels_last
from cp2_engine.util import drain

__all__ = ["Model", "Segmentation", "masks_from_flows"]

logger = logging.getLogger(__name__)


def masks_from_flows(flows, cellprob, *, config: SegmentConfig, niter: int) -> np.ndarray:
    """Masks from network flows and cell probability with the thresholds of ``config``
    (of a stack when ``cellprob`` is ``(Z, Y, X)``: 3-D dynamics or stitched planes)."""
    from cp2_engine.postprocess import compute_masks

    if np.ndim(cellprob) == 3:
        return masks_from_stack_flows(flows, cellprob, config=config, niter=niter)

    return compute_masks(
        flows,
        cellprob,
        niter=niter,
        cellprob_threshold=config.cellprob_threshold,
        flow_threshold=config.flow_threshold,
        min_size=config.min_size,
        max_size_fraction=config.max_size_fraction,
    )


class Model:
    """A CPnet ready for inference, with its optional size model.

    Build one with :meth:`load` (a file or a registered name), :meth:`from_net` or, for tests,
    :meth:`random`.

    Parameters
    ----------
    net : CPnet
        The network; it is put in eval mode and moved to ``device``.
    size_model : SizeModel, optional
        Predicts the diameter from the style vector (enables ``diameter=None`` estimation).
    device : str or torch.device
        Where the network runs.
    name : str
        Display name.

    Examples
    --------
    >>> model = Model.random(seed=0)
    >>> seg = model.segment(np.random.default_rng(0).random((64, 64)), diameter=30)
    >>> seg.masks.shape, seg.flows.shape
    ((64, 64), (2, 64, 64))
    """

    def __init__(self, net, *, size_model=None, device="auto", name: str = "model") -> None:
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.size_model = size_model
        self.name = name

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, name_or_path: str | os.PathLike, *, device="auto") -> Model:
        """Load a model by registered name or weights-file path (no downloads).

        One network only: :func:`cp2_engine.segmenters.load_segmenter` also loads model zoos
        (``"zoo:<folder>"``).

        The size model is the registry's ``size_*.npy``/``<weights>_size.npy`` match, if any.

        Raises
        ------
        FileNotFoundError
            (``ModelNotFoundError``) if nothing matches.
        ValueError
            (``ModelFileError``) if the file is not a CPnet weights file.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from cp2_engine.network._weights import save_model
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m"
        >>> save_model(Model.random(seed=1).net, p)
        >>> Model.load(p, device="cpu").name
        'm'
        """
        if str(name_or_path).startswith("zoo:"):
            raise ValueError(
                f"{name_or_path} is a model zoo; load it with "
                "cp2_engine.segmenters.load_segmenter (Model.load loads one network)"
            )
        from cp2_engine.inference._size_model import SizeModel
        from cp2_engine.network import build_net_from_state, find_model, load_state_dict

        spec = find_model(name_or_path)
        if len(spec.paths) > 1:
            logger.info(
                "model %s has %d replicates; using %s", spec.name, len(spec.paths), spec.paths[0]
            )
        net = build_net_from_state(load_state_dict(spec.paths[0]))
        size_model = SizeModel.load(spec.size_model) if spec.size_model is not None else None
        return cls(net, size_model=size_model, device=device, name=spec.name)

    @classmethod
    def from_net(cls, net, *, size_model=None, device=None, name: str = "model") -> Model:
        """Wrap an existing network (kept on its device unless ``device`` is given).

        Examples
        --------
        >>> from cp2_engine.network._net import CPnet
        >>> Model.from_net(CPnet()).diam_mean
        30.0
        """
        if device is None:
            device = next(net.parameters()).device
        return cls(net, size_model=size_model, device=device, name=name)

    @classmethod
    def random(cls, seed: int = 0, *, diam_mean: float = 30.0, device="cpu") -> Model:
        """A model with RANDOM (untrained) weights, for tests and timing only.

        The torch global RNG state is left untouched.

        Examples
        --------
        >>> Model.random(seed=3).name
        'random-weights-seed3'
        """
        from cp2_engine.network import CPnet

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            net = CPnet(diam_mean=diam_mean)
        return cls(net, device=device, name=f"random-weights-seed{seed}")

    # ------------------------------------------------------------------ properties
    @property
    def diam_mean(self) -> float:
        """Diameter the network was trained at (objects are rescaled to it)."""
        return float(self.net.diam_mean.item())

    @property
    def diam_labels(self) -> float:
        """Mean diameter of the training labels (0 or diam_mean when never trained)."""
        return float(self.net.diam_labels.item())

    def __repr__(self) -> str:
        size = "with" if self.size_model is not None else "without"
        return f"Model({self.name!r}, device={self.device}, {size} size model)"

    # ------------------------------------------------------------------ helpers
    def _config(self, config, overrides) -> SegmentConfig:
        if config is None:
            config = SegmentConfig()
        elif not isinstance(config, SegmentConfig):
            raise TypeError(f"config must be a SegmentConfig or None, got {type(config).__name__}")
        valid = {f.name for f in dataclasses.fields(SegmentConfig)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise TypeError(f"unknown segment option(s) {unknown}; valid: {sorted(valid)}")
        overrides = {k: v for k, v in overrides.items() if v is not None or k == "niter"}
        return dataclasses.replace(config, **overrides) if overrides else config

    def _prepare(self, image, config: SegmentConfig) -> np.ndarray:
        x = convert_image(
            image,
            channels=config.channels,
            channel_axis=config.channel_axis,
            normalize=config.normalize,
            invert=config.invert,
        )
        return fit_channels(x, self.net.nchan)

    def runner(self, config: SegmentConfig | None = None):
        """The network runner for ``config``'s precision and backend (cached per network).

        Examples
        --------
        >>> Model.random(seed=0).runner(SegmentConfig(precision="fp32", backend="torch"))
        NetRunner(backend='torch', precision='fp32')
        """
        config = config or SegmentConfig()
        return get_runner(
            self.net,
            device=self.device,
            precision=config.precision,
            backend=config.backend,
            channels_last=use_channels_last(config.channels_last, self.device),
        )

    def _network(self, x: np.ndarray, config: SegmentConfig, rescale: float):
        """Run the tiled net at ``rescale``; return (y at network scale, style)."""
        if rescale != 1.0:
            x = resize_image(x, rescale=rescale)
            if min(x.shape[-2:]) < 2:
                raise ValueError(
                    f"the image is too small for diameter rescaling by {rescale:.3g}: "
                    f"network input would be {x.shape[-2:]}"
                )
        return run_tiled(
            self.net,
            x,
            bsize=config.bsize,
            tile_overlap=config.tile_overlap,
            batch_size=config.batch_size,
            augment=config.augment,
            device=self.device,
            precision=config.precision,
            backend=config.backend,
            channels_last=use_channels_last(config.channels_last, self.device),
        )

    def _default_diameter(self) -> float:
        return self.diam_labels if self.diam_labels > 0 else self.diam_mean

    def _empty(self, shape, config: SegmentConfig, diameter: float, timer: _Timer) -> Segmentation:
        logger.warning("the image is constant: returning empty masks without running the network")
        return Segmentation(
            masks=np.zeros(shape, np.uint16),
            flows=np.zeros((2, *shape), np.float32),
            cellprob=np.zeros(shape, np.float32),
            style=np.zeros(self.net.nbase[-1], np.float32),
            diameter=float(diameter),
            rescale=self.diam_mean / diameter,
            niter=resolve_niter(config.niter, rescale=1.0, resample=config.resample),
            config=config,
            timings=timer.times,
        )

    # ------------------------------------------------------------------ public API
    def segment(
        self, image, *, diameter=None, channels=None, config=None, **overrides
    ) -> Segmentation:
        """Segment one 2-D image, or a z-stack with ``do_3d=True`` / ``stitch_threshold > 0``.

        Parameters
        ----------
        image : array_like
            ``(H, W)`` or ``(H, W, C)`` / ``(C, H, W)`` with ``C < 10``. With ``do_3d`` or
            ``stitch_threshold``: ``(Z, Y, X)`` or ``(Z, Y, X, C)`` (else ``z_axis=``,
            ``channel_axis=``); masks, cellprob ``(Z, Y, X)``, flows ``(3 or 2, Z, Y, X)``.
        diameter : float, optional
            Cell diameter in pixels; None uses ``config.diameter``; if that is also None (or 0):
            the size model's estimate when the model has one, else ``diam_labels``.
        channels : (int, int), optional
            Cellpose ``[chan, chan2]``; None uses ``config.channels`` (default (0, 0)).
        config : SegmentConfig, optional
            All other settings (defaults documented in :class:`SegmentConfig`).
        **overrides
            Any :class:`SegmentConfig` field, e.g. ``flow_threshold=0``.

        Returns
        -------
        Segmentation

        Raises
        ------
        ValueError
            Empty image, NaN/inf, wrong number of dimensions, a channel the image lacks,
            or an invalid setting.
        TypeError
            Non-numeric image or unknown option.

        Notes
        -----
        A constant image (after channel selection) gives empty masks and a logged warning; the
        network is not run.

        Examples
        --------
        >>> model = Model.random(seed=0)
        >>> seg = model.segment(np.zeros((32, 32)), diameter=15)
        >>> seg.n_masks
        0
        """
        return drain(
            self.iter_segment(
                image, diameter=diameter, channels=channels, config=config, **overrides
            )
        )

    def iter_segment(
        self, image, *, diameter=None, channels=None, config=None, **overrides
    ) -> Generator[PlaneProgress, None, Segmentation]:
        """:meth:`segment` as a generator of progress events (GUIs, long z-stacks).

        Parameters
        ----------
        image : array_like
            As :meth:`segment`: a 2-D image, or a z-stack with ``do_3d=True`` or
            ``stitch_threshold > 0``.
        diameter, channels, config, **overrides
            As :meth:`segment`.

        Yields
        ------
        PlaneProgress
            For a z-stack: ``stage`` (``"YX planes"``, ``"ZX planes"``, ``"ZY planes"`` with
            ``do_3d``; ``"planes"`` when stitching; then ``"masks"``) and ``done`` of ``total``,
            at the start of each stage and after every batch that finishes planes; each stage
            ends with ``done == total``. Nothing for a 2-D image.

        Returns
        -------
        Segmentation
            The generator's return value: what :meth:`segment` returns, bit for bit
            (:func:`cp2_engine.util.drain` runs the generator and returns it).

        Examples
        --------
        >>> from cp2_engine.util import drain
        >>> stack = np.random.default_rng(0).random((4, 32, 32))
        >>> gen = Model.random(seed=0).iter_segment(stack, do_3d=True, diameter=30)
        >>> events = []
        >>> seg = drain(gen, on_event=events.append)
        >>> [(e.stage, e.done) for e in events if e.done == e.total]
        [('YX planes', 4), ('ZX planes', 32), ('ZY planes', 32), ('masks', 1)]
        >>> seg.masks.shape
        (4, 32, 32)
        """
        config = self._config(config, {**overrides, "diameter": diameter, "channels": channels})
        timer = _Timer()
        if config.do_3d or config.stitch_threshold > 0:
            with timer("total"):
                fields = yield from iter_segment_stack(self, image, config, timer)
            return Segmentation(**fields, timings=timer.times)
        with timer("total"):
            with timer("prepare"):
                x = self._prepare(image, config)
            diam = config.diameter or None
            if not x.any():
                return self._empty(x.shape[1:], config, diam or self._default_diameter(), timer)
            seg = None
            if diam is None and self.size_model is None:
                diam = self._default_diameter()
            elif diam is None:
                with timer("diameter"):
                    diam, seg = estimate_and_segment(self, x, config)
            if seg is None:
                seg = self._segment_prepared(x, config, float(diam), timer)
        return dataclasses.replace(seg, timings=timer.times)

    def _segment_prepared(self, x, config: SegmentConfig, diameter: float, timer) -> Segmentation:
        rescale = self.diam_mean / diameter
        shape = x.shape[1:]
        with timer("network"):
            y, style = self._network(x, config, rescale)
        niter = resolve_niter(config.niter, rescale=rescale, resample=config.resample)
        if config.resample:
            with timer("resize"):
                y = resize_image(y, shape=shape) if y.shape[1:] != shape else y
            with timer("masks"):
                masks = masks_from_flows(y[:2], y[2], config=config, niter=niter)
        else:
            with timer("masks"):
                masks = masks_from_flows(y[:2], y[2], config=config, niter=niter)
            with timer("resize"):
                if y.shape[1:] != shape:
                    masks = resize_image(masks, shape=shape, interpolation="nearest")
                    y = resize_image(y, shape=shape)
        return Segmentation(
            masks=masks,
            flows=np.ascontiguousarray(y[:2]),
            cellprob=np.ascontiguousarray(y[2]),
            style=style,
            diameter=diameter,
            rescale=rescale,
            niter=niter,
            config=dataclasses.replace(config, diameter=diameter),
        )

    def _estimate_prepared(self, x: np.ndarray, config: SegmentConfig) -> float:
        return float(estimate_and_segment(self, x, config)[0])

    def estimate_diameter(self, image, *, channels=None, config=None, **overrides) -> float:
        """Estimate the cell diameter (pixels) with the two-step size-model procedure.

        1. style of the image (network at ``diam_mean / diam_labels``, at most 8 tiles spread
           over the image) -> size model -> ``d0``;
        2. segment at ``d0`` and measure the masks' median equivalent-circle diameter, and
           repeat from that measure while it moves (at most 4 times); if that does not
           converge, the same from the model's training diameter. The estimate is the measure
           whose masks agree best with the diameter they were segmented at (``_diameter.py``).
           On large images each step segments one window (``_estimate.py``), so the whole
           estimate costs about one extra network pass; ``segment(diameter=None)`` reuses the
           last step's segmentation when it covered the whole image.

        Raises
        ------
        ValueError
            If the model has no size model, or the image is invalid or constant.

        Examples
        --------
        >>> Model.random(seed=0).estimate_diameter(np.ones((8, 8)))
        Traceback (most recent call last):
        ...
        ValueError: model 'random-weights-seed0' has no size model; pass diameter= instead
        """
        if self.size_model is None:
            raise ValueError(f"model {self.name!r} has no size model; pass diameter= instead")
        config = self._config(config, {**overrides, "channels": channels})
        x = self._prepare(image, config)
        if not x.any():
            raise ValueError("cannot estimate a diameter on a constant image")
        return self._estimate_prepared(x, config)

    def style(self, image, *, channels=None, config=None, **overrides) -> np.ndarray:
        """Style vector (float32, unit length) of an image at the model's default scale.

        Examples
        --------
        >>> Model.random(seed=0).style(np.random.default_rng(1).random((48, 48))).shape
        (256,)
        """
        config = self._config(config, {**overrides, "channels": channels})
        x = self._prepare(image, config)
        diam = config.diameter or self._default_diameter()
        _, style = self._network(x, config, self.diam_mean / diam)
        return style

    def recompute_masks(
        self,
        seg: Segmentation,
        *,
        flow_threshold: float | None = None,
        cellprob_threshold: float | None = None,
        min_size: int | None = None,
    ) -> Segmentation:
        """Recompute masks from the cached flows of ``seg`` with new thresholds (no network).

        Examples
        --------
        >>> model = Model.random(seed=0)
        >>> seg = model.segment(np.random.default_rng(0).random((40, 40)), diameter=30)
        >>> model.recompute_masks(seg, cellprob_threshold=100.0).n_masks
        0
        """
        if not isinstance(seg, Segmentation):
            raise TypeError(f"seg must be a Segmentation, got {type(seg).__name__}")
        changes = {
            "flow_threshold": flow_threshold,
            "cellprob_threshold": cellprob_threshold,
            "min_size": min_size,
        }
        config = dataclasses.replace(
            seg.config, **{k: v for k, v in changes.items() if v is not None}
        )
        t0 = time.perf_counter()
        masks = masks_from_flows(seg.flows, seg.cellprob, config=config, niter=seg.niter)
        return dataclasses.replace(
            seg, masks=masks, config=config, timings={"masks": time.perf_counter() - t0}
        )

    def segment_many(
        self, images: Iterable, *, config=None, **overrides
    ) -> Iterator[SegmentProgress]:
        """Segment several images, yielding a :class:`SegmentProgress` after each.

        ``images`` may hold arrays or paths (read with :func:`cp2_engine.io.imread`).

        Examples
        --------
        >>> model = Model.random(seed=0)
        >>> [p.done for p in model.segment_many([np.ones((16, 16))] * 2, diameter=30)]
        [1, 2]
        """
        return iter_segment_many(self, images, config=config, **overrides)
