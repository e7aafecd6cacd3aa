"""The demo pipeline behind ``cp2 demo``: a real run of the engine on ``sample_data/``.

It does not use the bundled trained models yet (issue 4 adds that); it shows:

1. for every sample image with labels: labels -> flows -> masks round trip (the exact flows a
   perfect network would predict), its average precision against the labels, and an overlay PNG
   (labels in green, round-trip masks in magenta);
2. the forward time of the CPnet with RANDOM weights on 224x224 tiles (speed only; random
   weights do not segment anything).

:func:`iter_demo` yields :class:`DemoEvent` progress and returns a :class:`DemoResult`;
:func:`run_demo` drains it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._generators import drain

__all__ = [
    "NO_MODEL_NOTE",
    "DemoEvent",
    "DemoImage",
    "DemoResult",
    "default_sample_dir",
    "find_samples",
    "iter_demo",
    "overlay_rgb",
    "run_demo",
]

logger = logging.getLogger(__name__)

NO_MODEL_NOTE = (
    "This demo does not use the bundled trained models yet: it checks the flow representation "
    "(labels -> flows -> masks) on real and synthetic images and times the network with random "
    "weights. Segment with the bundled models: `cp2 segment IMAGE --model cp2_nuclei` (or "
    "cp2_cyto), or with a Cellpose 2/3 model file: `cp2 segment IMAGE --model PATH`."
)
_CELLPROB_LOGIT = 10.0  # cell probability of the round trip: inside +10, outside -10


@dataclass(frozen=True)
class DemoEvent:
    """Progress of the demo: ``step`` of ``total`` finished, with a message."""

    step: int
    total: int
    message: str


@dataclass(frozen=True)
class DemoImage:
    """Round-trip result of one sample image."""

    name: str
    shape: tuple[int, ...]
    n_true: int
    n_pred: int
    ap: tuple[float, float, float]
    seconds_flows: float
    seconds_masks: float
    overlay: Path


@dataclass(frozen=True)
class DemoResult:
    """Everything the demo measured."""

    images: tuple[DemoImage, ...]
    forward_seconds: float
    forward_batch: int
    tile: int
    out_dir: Path
    summary: Path
    note: str = NO_MODEL_NOTE


def default_sample_dir() -> Path:
    """``$CP2_SAMPLE_DATA`` if set, else ``sample_data/`` of the source checkout.

    Examples
    --------
    >>> default_sample_dir().name
    'sample_data'
    """
    env = os.environ.get("CP2_SAMPLE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "sample_data"


def find_samples(sample_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """List ``(name, image, labels)`` for every ``<name>.tif`` with a ``<name>_masks.tif``.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or holds no image with labels.

    Examples
    --------
    >>> [s[0] for s in find_samples(default_sample_dir())][:1]
    ['dsb2018_fluo_nuclei']
    """
    folder = Path(sample_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"sample data folder not found: {folder}")
    found = []
    for img in sorted(folder.glob("*.tif")):
        masks = img.with_name(f"{img.stem}_masks.tif")
        if not img.stem.endswith("_masks") and masks.is_file():
            found.append((img.stem, img, masks))
    if not found:
        raise FileNotFoundError(f"no <name>.tif + <name>_masks.tif pairs in {folder}")
    return found


def overlay_rgb(image, labels_true, labels_pred=None) -> np.ndarray:
    """Grey image (1-99% scaled) with true outlines in green and predicted ones in magenta.

    Examples
    --------
    >>> lab = np.zeros((20, 20), np.uint16); lab[5:12, 5:12] = 1
    >>> overlay_rgb(np.random.default_rng(0).random((20, 20)), lab).shape
    (20, 20, 3)
    """
    from skimage.segmentation import find_boundaries

    from .transforms import convert_image

    grey = np.clip(convert_image(image, normalize=True)[0], 0, 1)
    rgb = (np.repeat(grey[..., None], 3, axis=-1) * 200).astype(np.uint8)
    rgb[find_boundaries(labels_true, mode="inner")] = (0, 255, 0)
    if labels_pred is not None:
        rgb[find_boundaries(labels_pred, mode="outer")] = (255, 0, 255)
    return rgb


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        Image.fromarray(rgb).save(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _round_trip(name: str, img_path: Path, mask_path: Path, out_dir: Path) -> DemoImage:
    import tifffile

    from .flows import masks_to_flows
    from .masks import compute_masks
    from .metrics import average_precision

    image, labels = tifffile.imread(img_path), tifffile.imread(mask_path)
    t0 = time.perf_counter()
    flows = masks_to_flows(labels)
    t1 = time.perf_counter()
    cellprob = np.where(labels > 0, _CELLPROB_LOGIT, -_CELLPROB_LOGIT).astype(np.float32)
    masks = compute_masks(5.0 * flows, cellprob)
    t2 = time.perf_counter()
    ap = average_precision(labels, masks).ap[0]
    overlay = out_dir / f"{name}_roundtrip_overlay.png"
    _save_png(overlay, overlay_rgb(image, labels, masks))
    return DemoImage(
        name=name,
        shape=tuple(image.shape),
        n_true=int(len(np.unique(labels)) - 1),
        n_pred=int(masks.max()),
        ap=tuple(float(a) for a in ap),
        seconds_flows=t1 - t0,
        seconds_masks=t2 - t1,
        overlay=overlay,
    )


def time_random_forward(*, batch: int = 8, tile: int = 224, repeats: int = 3) -> float:
    """Median seconds of one forward pass of a random-weights CPnet on ``batch`` tiles (CPU).

    Examples
    --------
    >>> time_random_forward(batch=1, tile=32, repeats=1) > 0
    True
    """
    import torch

    from .model import Model
    from .net import inference_forward

    net = Model.random(seed=0, device="cpu").net
    x = torch.from_numpy(np.random.default_rng(0).random((batch, 2, tile, tile), np.float32))
    inference_forward(net, x)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        inference_forward(net, x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _summary_text(images, forward: float, batch: int, tile: int) -> str:
    lines = [
        "# cp2 demo summary",
        "",
        NO_MODEL_NOTE,
        "",
        "## labels -> flows -> masks round trip",
        "",
        "| image | shape | true | found | AP@0.5 | AP@0.75 | AP@0.9 | flows s | masks s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in images:
        lines.append(
            f"| {r.name} | {'x'.join(map(str, r.shape))} | {r.n_true} | {r.n_pred} | "
            f"{r.ap[0]:.3f} | {r.ap[1]:.3f} | {r.ap[2]:.3f} | {r.seconds_flows:.2f} | "
            f"{r.seconds_masks:.2f} |"
        )
    lines += [
        "",
        "## network speed (random weights, CPU)",
        "",
        f"one forward pass of {batch} x {tile}x{tile} tiles: {forward:.3f} s",
        "",
    ]
    return "\n".join(lines)


def iter_demo(
    out_dir: str | os.PathLike,
    *,
    sample_dir: str | os.PathLike | None = None,
    quick: bool = False,
    time_network: bool = True,
) -> Generator[DemoEvent, None, DemoResult]:
    """Run the demo, yielding progress; the generator's return value is the :class:`DemoResult`.

    Parameters
    ----------
    out_dir : path
        Folder for the overlays and ``demo_summary.md`` (created if missing; earlier demo outputs
        are replaced).
    sample_dir : path, optional
        Folder of ``<name>.tif`` + ``<name>_masks.tif``; default :func:`default_sample_dir`.
    quick : bool
        Only the two smallest images and one tile (for CI).
    time_network : bool
        Time the random-weights forward pass (False skips it and reports 0 s).

    Examples
    --------
    >>> import tempfile
    >>> result = run_demo(tempfile.mkdtemp(), quick=True)
    >>> len(result.images)
    2
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = find_samples(sample_dir or default_sample_dir())
    if quick:
        samples = sorted(samples, key=lambda s: s[1].stat().st_size)[:2]
    total = len(samples) + 1
    images = []
    for k, (name, img, masks) in enumerate(samples):
        images.append(_round_trip(name, img, masks, out))
        yield DemoEvent(k + 1, total, f"{name}: AP@0.5 = {images[-1].ap[0]:.3f}")
    batch = 1 if quick else 8
    forward = time_random_forward(batch=batch, repeats=1 if quick else 3) if time_network else 0.0
    yield DemoEvent(total, total, f"random-weights forward, {batch} tile(s): {forward:.3f} s")
    summary = out / "demo_summary.md"
    summary.write_text(_summary_text(images, forward, batch, 224), encoding="utf-8")
    return DemoResult(tuple(images), forward, batch, 224, out, summary)


def run_demo(out_dir, *, sample_dir=None, quick: bool = False) -> DemoResult:
    """Run :func:`iter_demo` to the end and return its result (see there for parameters).

    Examples
    --------
    >>> import tempfile
    >>> run_demo(tempfile.mkdtemp(), quick=True).forward_batch
    1
    """
    gen = iter_demo(out_dir, sample_dir=sample_dir, quick=quick)
    return drain(gen)
