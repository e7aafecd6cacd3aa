"""The demo behind ``cp2 demo``: the bundled models at work, and a simulated human in the loop.

1. **Segmentation.** Every ``<name>.tif`` + ``<name>_masks.tif`` pair of ``sample_data/`` is
   segmented by the matching bundled model (``dsb2018_*`` → ``cp2_nuclei``, anything else →
   ``cp2_cyto``), the size model choosing the diameter. Per image the demo writes the masks
   (``<name>_cp_masks.tif``), a Cellpose-compatible ``<name>_seg.npy``, an overlay PNG and the
   AP against the ground truth.
2. **Human in the loop.** On images the starting model was not trained for (the nucleus model
   ``cp2_nuclei`` on synthetic phase-contrast whole cells; ``cp2_cyto`` now segments every
   synthetic style almost perfectly, so it would show no loop), a
   :class:`~cp2_engine.hitl.HitlProject` runs ``n_rounds`` rounds: the current model
   predicts the next image, the :class:`~cp2_engine.hitl.SimulatedAnnotator` corrects it
   (counting the ROIs it had to draw), the correction is accepted, and the starting model is
   fine-tuned on all accepted images (online mode). After each round the new model's AP is
   measured on held-out images of the same style. The same images are run from random weights
   (``scratch``) for comparison.
3. **Report.** :mod:`cp2_engine.demo._report` writes ``report/report.md``, ``report/report.html``
   and the figures.

:func:`iter_demo` yields :class:`DemoEvent` progress and returns a :class:`DemoResult`;
:func:`run_demo` drains it. The output folder holds a ``demo_manifest.json``; the demo refuses
to write into a non-empty folder without one (it never clobbers user files) and replaces its own
earlier output.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Generator
from pathlib import Path

import numpy as np

from cp2_engine.util import drain
from cp2_engine.viz import overlay_rgb

from ._hitl import _hitl_data, _hitl_run
from ._report import write_report
from ._samples import (
    _select_samples,
    _write_manifest,
    default_sample_dir,
    find_samples,
    model_for_sample,
    prepare_out_dir,
)
from ._settings import DemoEvent, DemoImage, DemoResult, DemoSettings

__all__ = ["iter_demo", "run_demo"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- segmentation
def _save_png(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    from cp2_engine.util import atomic_write

    with atomic_write(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="png")
    return path


def _central_crop(image: np.ndarray, labels: np.ndarray, size: int | None):
    """The central ``size`` x ``size`` region of an (H, W[, C]) image and its labels."""
    if size is None:
        return image, labels
    y0 = max(0, (labels.shape[0] - size) // 2)
    x0 = max(0, (labels.shape[1] - size) // 2)
    window = (slice(y0, y0 + size), slice(x0, x0 + size))
    return image[window], labels[window]


def _segment_sample(name: str, img_path: Path, mask_path: Path, model, seg_dir: Path, crop):
    from cp2_engine.inference import save_segmentation_npy
    from cp2_engine.io import imread, save_masks
    from cp2_engine.metrics import average_precision

    image, labels = _central_crop(imread(img_path), imread(mask_path), crop)
    t0 = time.perf_counter()
    seg = model.segment(image)  # diameter=None: the size model estimates it
    seconds = time.perf_counter() - t0
    ap = average_precision(labels, seg.masks).ap[0]
    masks_path = save_masks(seg_dir / f"{name}_cp_masks.tif", seg.masks, overwrite=True)
    seg_path = save_segmentation_npy(
        seg_dir / f"{name}_seg.npy", seg, image=image, model_path=model.name, overwrite=True
    )
    overlay = _save_png(seg_dir / f"{name}_overlay.png", overlay_rgb(image, labels, seg.masks))
    return DemoImage(
        name=name,
        model=model.name,
        shape=tuple(image.shape),
        n_true=int(len(np.unique(labels)) - 1),
        n_pred=int(seg.masks.max()),
        diameter=float(seg.diameter),
        ap=tuple(float(a) for a in ap),
        seconds=seconds,
        masks_path=masks_path,
        seg_path=seg_path,
        overlay=overlay,
    )


def _load_models(names, device: str) -> dict:
    from cp2_engine.inference import Model

    return {name: Model.load(name, device=device) for name in sorted(set(names))}


# ----------------------------------------------------------------------------- the demo
def iter_demo(
    out_dir: str | os.PathLike,
    *,
    sample_dir: str | os.PathLike | None = None,
    quick: bool = False,
    seed: int = 0,
    settings: DemoSettings | None = None,
) -> Generator[DemoEvent, None, DemoResult]:
    """Run the demo, yielding progress; the generator's return value is the :class:`DemoResult`.

    Parameters
    ----------
    out_dir : path
        Output folder: new, empty, or an earlier demo output (see :func:`prepare_out_dir`).
    sample_dir : path, optional
        Folder of ``<name>.tif`` + ``<name>_masks.tif``; default :func:`default_sample_dir`.
    quick : bool
        :meth:`DemoSettings.quick` (for CI: the real pipeline with tiny sizes).
    seed : int
        Seed of the HITL images and training.
    settings : DemoSettings, optional
        Explicit sizes (overrides ``quick`` and ``seed``).

    Raises
    ------
    FileNotFoundError
        Missing sample folder or no image/label pairs in it.
    FileExistsError
        ``out_dir`` is a non-empty folder that is not a demo output.

    Examples
    --------
    >>> import tempfile
    >>> result = run_demo(Path(tempfile.mkdtemp()) / "demo", quick=True)  # doctest: +SKIP
    >>> [run.init for run in result.hitl]  # doctest: +SKIP
    ['pretrained', 'scratch']
    """
    t0 = time.perf_counter()
    if settings is None:
        settings = DemoSettings.quick(seed=seed) if quick else DemoSettings(seed=seed)
    sample_dir = Path(sample_dir) if sample_dir is not None else default_sample_dir()
    samples = _select_samples(find_samples(sample_dir), settings.max_samples_per_model)
    out = prepare_out_dir(out_dir)
    _write_manifest(out, settings, sample_dir)
    progress = [0, len(samples) + 2 * (settings.n_rounds + 1) + 1]
    images = yield from _segment_all(samples, out / "segmentation", settings, progress)
    train, test = _hitl_data(settings)
    runs = []
    for init in ("pretrained", "scratch"):
        run = yield from _hitl_run(init, train, test, settings, out / "hitl", progress)
        runs.append(run)
    partial = DemoResult(tuple(images), tuple(runs), settings, out, out, out, (), 0.0)
    md, html, figures = write_report(partial, test_image=test[0])
    result = dataclasses.replace(partial, report_md=md, report_html=html, figures=figures,
                                 seconds=time.perf_counter() - t0)  # fmt: skip
    progress[0] += 1
    yield DemoEvent.of(progress, f"report: {md}")
    return result


def _segment_all(samples, seg_dir: Path, settings: DemoSettings, progress: list):
    seg_dir.mkdir(parents=True, exist_ok=True)
    models = _load_models([model_for_sample(s[0]) for s in samples], settings.device)
    images = []
    for name, img, masks in samples:
        model = models[model_for_sample(name)]
        images.append(_segment_sample(name, img, masks, model, seg_dir, settings.sample_crop))
        progress[0] += 1
        r = images[-1]
        yield DemoEvent.of(progress, f"{name} ({r.model}, diameter {r.diameter:.1f}): "
                                   f"AP@0.5 {r.ap[0]:.3f}, AP@0.75 {r.ap[1]:.3f}")  # fmt: skip
    return images


def run_demo(
    out_dir, *, sample_dir=None, quick: bool = False, seed: int = 0, settings=None
) -> DemoResult:
    """Run :func:`iter_demo` to the end and return its result (see there for parameters).

    Examples
    --------
    >>> import tempfile
    >>> run_demo(Path(tempfile.mkdtemp()) / "demo", quick=True).report_md.name  # doctest: +SKIP
    'report.md'
    """
    gen = iter_demo(out_dir, sample_dir=sample_dir, quick=quick, seed=seed, settings=settings)
    return drain(gen)
