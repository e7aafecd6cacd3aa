"""The demo behind ``cp2 demo``: the bundled models at work, and a simulated human in the loop.

1. **Segmentation.** Every ``<name>.tif`` + ``<name>_masks.tif`` pair of ``sample_data/`` is
   segmented by the matching bundled model (``dsb2018_*`` → ``cp2_nuclei``, anything else →
   ``cp2_cyto``), the size model choosing the diameter. Per image the demo writes the masks
   (``<name>_cp_masks.tif``), a Cellpose-compatible ``<name>_seg.npy``, an overlay PNG and the
   AP against the ground truth.
2. **Human in the loop.** On a synthetic style that ``cp2_cyto`` segments badly (grey,
   single-channel brightfield-like cells: it was trained on synthetic cells *with* a nucleus
   channel), a :class:`~cp2_engine.hitl.HitlProject` runs ``n_rounds`` rounds: the current model
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
import json
import logging
import os
import shutil
import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cp2_engine.util import drain

__all__ = [
    "MANIFEST",
    "DemoEvent",
    "DemoImage",
    "DemoResult",
    "DemoSettings",
    "HitlRound",
    "HitlRun",
    "default_sample_dir",
    "find_samples",
    "iter_demo",
    "model_for_sample",
    "overlay_rgb",
    "prepare_out_dir",
    "run_demo",
]

logger = logging.getLogger(__name__)

#: File that marks a folder as a cp2 demo output (the demo only ever replaces such folders).
MANIFEST = "demo_manifest.json"
_MODEL_BY_PREFIX = (
    ("dsb2018_", "cp2_nuclei"),
    ("usiigaci_", "cp2_cyto"),
    ("synthetic_", "cp2_cyto"),
)


# ----------------------------------------------------------------------------- settings, results
@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo. The defaults fit about 10 minutes on 2 CPU cores; see :meth:`quick`.

    The human-in-the-loop rounds are shortened on purpose: ``n_epochs=40`` with 160-px crops
    and 4 crops per step, instead of the training defaults (100 epochs, 224-px crops, 8 crops);
    with 4 crops per step the learning rate is 0.05 (default 0.1: measured unstable here, one
    round's model collapsed to no masks).

    Parameters
    ----------
    pretrained : str
        The bundled model the HITL rounds fine-tune.
    style : str
        Synthetic style of the HITL images (``cp2_engine.synthetic.touching_cells``).
    diameter : float
        Cell diameter of the HITL images (pixels); also the diameter used to segment them.
    image_size : int
        Side of the square HITL images.
    n_rounds, n_test : int
        HITL rounds (one new image each) and held-out test images.
    n_epochs, bsize, batch_size : int
        Training epochs per round, crop side, crops per step (one step per epoch).
    learning_rate : float
        SGD learning rate of every round (pretrained and scratch alike).
    seed : int
        Seed of the synthetic images and the training.
    device : str
        Torch device ("auto" = CUDA or MPS when present, else CPU).
    max_samples_per_model : int or None
        Segment at most this many sample images per model (smallest files first); None = all.
    sample_crop : int or None
        Segment only the central ``sample_crop`` x ``sample_crop`` region of each sample (for
        quick runs); None = whole images.

    Examples
    --------
    >>> DemoSettings().n_rounds, DemoSettings.quick().n_rounds
    (3, 3)
    """

    pretrained: str = "cp2_cyto"
    style: str = "brightfield"
    diameter: float = 24.0
    image_size: int = 192
    n_rounds: int = 3
    n_test: int = 3
    n_epochs: int = 40
    bsize: int = 160
    batch_size: int = 4
    learning_rate: float = 0.05
    seed: int = 0
    device: str = "auto"
    max_samples_per_model: int | None = None
    sample_crop: int | None = None

    def __post_init__(self) -> None:
        for name in ("image_size", "n_rounds", "n_test", "n_epochs", "bsize", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.bsize % 16:
            raise ValueError(f"bsize must be a multiple of 16, got {self.bsize}")

    @classmethod
    def quick(cls, **overrides) -> DemoSettings:
        """Tiny settings for CI: one 128-px crop per model, 64-px HITL images, 1 epoch per round.

        Examples
        --------
        >>> DemoSettings.quick(seed=3).seed
        3
        """
        base = {"image_size": 64, "n_test": 1, "n_epochs": 1, "bsize": 48, "batch_size": 1,
                "max_samples_per_model": 1, "sample_crop": 128}  # fmt: skip
        return cls(**{**base, **overrides})

    def train_config(self):
        """The online-mode :class:`~cp2_engine.training.TrainConfig` of every HITL round."""
        from cp2_engine.training import TrainConfig

        return TrainConfig(
            mode="online",
            n_epochs=self.n_epochs,
            learning_rate=self.learning_rate,
            bsize=self.bsize,
            batch_size=self.batch_size,
            min_images_per_epoch=self.batch_size,
            warmup_epochs=min(10, self.n_epochs // 3),
            min_train_masks=1,
            save_every=self.n_epochs,
            seed=self.seed,
            device=self.device,
        )


@dataclass(frozen=True)
class DemoEvent:
    """Progress of the demo: ``step`` of ``total`` finished, with a message."""

    step: int
    total: int
    message: str


@dataclass(frozen=True)
class DemoImage:
    """Segmentation of one sample image by a bundled model, and its accuracy."""

    name: str
    model: str
    shape: tuple[int, ...]
    n_true: int
    n_pred: int
    diameter: float
    ap: tuple[float, float, float]
    seconds: float
    masks_path: Path
    seg_path: Path
    overlay: Path


@dataclass(frozen=True)
class HitlRound:
    """One HITL round (round 0 is the starting model, before any annotation).

    ``n_drawn`` is the number of ROIs the annotator had to draw on ``image`` (the human effort);
    ``ap50`` / ``ap75`` are the mean AP of the model trained in this round on the test images.
    """

    round: int
    image: str | None
    n_true: int
    n_kept: int
    n_drawn: int
    n_deleted: int
    ap50: float
    ap75: float
    train_seconds: float
    losses: tuple[float, ...]


@dataclass(frozen=True)
class HitlRun:
    """All rounds of one starting point (``init`` is "pretrained" or "scratch")."""

    init: str
    start_model: str
    project: Path
    rounds: tuple[HitlRound, ...]
    example_masks: tuple[np.ndarray, ...]  # test image 0: prediction of round 0 and last round


@dataclass(frozen=True)
class DemoResult:
    """Everything the demo measured and wrote."""

    images: tuple[DemoImage, ...]
    hitl: tuple[HitlRun, ...]
    settings: DemoSettings
    out_dir: Path
    report_md: Path
    report_html: Path
    figures: tuple[Path, ...]
    seconds: float


# ----------------------------------------------------------------------------- inputs
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
    return Path(__file__).resolve().parents[3] / "sample_data"


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


def model_for_sample(name: str) -> str:
    """The bundled model for a sample image: ``dsb2018_*`` → cp2_nuclei, else cp2_cyto.

    Examples
    --------
    >>> model_for_sample("dsb2018_fluo_nuclei"), model_for_sample("usiigaci_phase_3t3")
    ('cp2_nuclei', 'cp2_cyto')
    """
    return next((m for p, m in _MODEL_BY_PREFIX if name.startswith(p)), "cp2_cyto")


def _select_samples(samples: list, limit: int | None) -> list:
    """At most ``limit`` samples per model (smallest files first), in the original order."""
    if limit is None:
        return samples
    keep: dict[str, list] = {}
    for s in sorted(samples, key=lambda s: s[1].stat().st_size):
        keep.setdefault(model_for_sample(s[0]), []).append(s)
    chosen = {s[0] for group in keep.values() for s in group[:limit]}
    return [s for s in samples if s[0] in chosen]


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Check and prepare the output folder; return it.

    A new or empty folder is used as is. A folder holding :data:`MANIFEST` is an earlier demo
    output: its ``hitl/`` projects are removed and its other files replaced (so is a folder holding
    only what the earlier round-trip demo wrote). Any other non-empty folder is refused, so user
    files are never overwritten.

    Raises
    ------
    FileExistsError
        If ``out_dir`` is a file, or a non-empty folder that is not a demo output.

    Examples
    --------
    >>> import tempfile
    >>> prepare_out_dir(Path(tempfile.mkdtemp()) / "demo").is_dir()
    True
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; expected a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file() and not _is_old_demo_output(out):
            raise FileExistsError(
                f"{out} is not empty and is not a cp2 demo output (no {MANIFEST}); "
                "choose a new or empty folder: the demo never overwrites other files"
            )
        logger.info("replacing the earlier demo output in %s", out)
        shutil.rmtree(out / "hitl", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _is_old_demo_output(out: Path) -> bool:
    """Whether ``out`` holds only what the earlier round-trip demo wrote (no manifest then)."""
    names = [p.name for p in out.iterdir()]
    ours = [n for n in names if n == "demo_summary.md" or n.endswith("_roundtrip_overlay.png")]
    return "demo_summary.md" in names and len(ours) == len(names)


def _write_manifest(out: Path, settings: DemoSettings, sample_dir: Path) -> None:
    from cp2_engine import __version__
    from cp2_engine.io import atomic_write

    data = {
        "cp2_demo": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sample_dir": str(sample_dir),
        "settings": dataclasses.asdict(settings),
    }
    with atomic_write(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


# ----------------------------------------------------------------------------- segmentation
def overlay_rgb(image, labels_true, labels_pred=None) -> np.ndarray:
    """Grey image (1-99% scaled) with true outlines in green and predicted ones in magenta.

    Examples
    --------
    >>> lab = np.zeros((20, 20), np.uint16); lab[5:12, 5:12] = 1
    >>> overlay_rgb(np.random.default_rng(0).random((20, 20)), lab).shape
    (20, 20, 3)
    """
    from skimage.segmentation import find_boundaries

    from cp2_engine.inference import convert_image

    grey = np.clip(convert_image(image, normalize=True)[0], 0, 1)
    rgb = (np.repeat(grey[..., None], 3, axis=-1) * 200).astype(np.uint8)
    rgb[find_boundaries(labels_true, mode="inner")] = (0, 255, 0)
    if labels_pred is not None:
        rgb[find_boundaries(labels_pred, mode="outer")] = (255, 0, 255)
    return rgb


def _save_png(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    from cp2_engine.io import atomic_write

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
    from cp2_engine.io import imread, save_masks, save_seg_npy
    from cp2_engine.metrics import average_precision

    image, labels = _central_crop(imread(img_path), imread(mask_path), crop)
    t0 = time.perf_counter()
    seg = model.segment(image)  # diameter=None: the size model estimates it
    seconds = time.perf_counter() - t0
    ap = average_precision(labels, seg.masks).ap[0]
    masks_path = save_masks(seg_dir / f"{name}_cp_masks.tif", seg.masks, overwrite=True)
    seg_path = save_seg_npy(
        seg_dir / f"{name}_seg.npy",
        image=image,
        masks=seg.masks,
        flows=seg.flows,
        cellprob=seg.cellprob,
        diameter=seg.diameter,
        model_path=model.name,
        overwrite=True,
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


# ----------------------------------------------------------------------------- human in the loop
def _hitl_data(settings: DemoSettings):
    """Seeded synthetic (train, test) lists of SyntheticImage for the HITL part."""
    from cp2_engine.synthetic import touching_cells

    shape = (settings.image_size, settings.image_size)
    made = [
        touching_cells(
            shape,
            diameter=settings.diameter,
            style=settings.style,
            seed=settings.seed * 1000 + 500 + i,
        )
        for i in range(settings.n_rounds + settings.n_test)
    ]
    return made[: settings.n_rounds], made[settings.n_rounds :]


def _test_scores(model, test, diameter: float) -> tuple[float, float, np.ndarray]:
    from cp2_engine.metrics import average_precision

    preds = [model.segment(t.image, diameter=diameter).masks for t in test]
    mean = average_precision([t.labels for t in test], preds, thresholds=(0.5, 0.75)).mean_ap
    return float(mean[0]), float(mean[1]), preds[0]


def _retrain(project, label: str, step: int, total: int, losses: list):
    """Run one HITL retraining, collecting epoch losses and yielding epoch progress."""
    from cp2_engine.training import EpochEvent

    gen = project.iter_retrain(evaluate=False)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, EpochEvent):
            losses.append(float(event.loss))
            yield DemoEvent(step, total, f"{label}: epoch {event.epoch + 1} loss {event.loss:.3f}")


def _hitl_run(init: str, train, test, settings: DemoSettings, folder: Path, progress: list):
    """One starting point through all rounds; ``progress`` = [step, total], updated in place."""
    from cp2_engine.hitl import HitlProject, SimulatedAnnotator

    start = settings.pretrained if init == "pretrained" else "scratch"
    project = HitlProject.create(
        folder / init,
        images=[t.image for t in train],
        ground_truth=[t.labels for t in train],
        names=[f"{settings.style}_{i:02d}" for i in range(len(train))],
        initial_model=start,
        train_config=settings.train_config(),
        diameter=settings.diameter,
        device=settings.device,
    )
    ap50, ap75, first = _test_scores(project.load_model(), test, settings.diameter)
    rounds = [HitlRound(0, None, 0, 0, 0, 0, ap50, ap75, 0.0, ())]
    progress[0] += 1
    yield DemoEvent(*progress, f"HITL {init} ({start}): start AP@0.5 {ap50:.3f}")
    annotator, last = SimulatedAnnotator(), first
    for r in range(1, settings.n_rounds + 1):
        name = project.next_image()
        correction = annotator.correct(project.truth(name), project.predict(name).masks)
        project.accept(name, correction.labels)
        losses: list[float] = []
        record = yield from _retrain(project, f"HITL {init} round {r}", *progress, losses)
        ap50, ap75, last = _test_scores(project.load_model(), test, settings.diameter)
        n_true = int(len(np.unique(project.truth(name))) - 1)
        rounds.append(HitlRound(r, name, n_true, correction.n_kept, correction.n_drawn,
                                correction.n_deleted, ap50, ap75, record.train_seconds,
                                tuple(losses)))  # fmt: skip
        progress[0] += 1
        yield DemoEvent(*progress, f"HITL {init} round {r}: drew {correction.n_drawn} ROIs, "
                                   f"test AP@0.5 {ap50:.3f}")  # fmt: skip
    for ckpt in (project.folder / "models").glob("round_*.ckpt"):
        ckpt.unlink()  # resume checkpoints (53 MB each); the round models stay
    return HitlRun(init, start, project.folder, tuple(rounds), (first, last))


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
    from cp2_engine.demo._report import write_report

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
    yield DemoEvent(*progress, f"report: {md}")
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
        yield DemoEvent(*progress, f"{name} ({r.model}, diameter {r.diameter:.1f}): "
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
