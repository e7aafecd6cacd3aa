"""The demo's settings (:class:`DemoSettings`), progress events and results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cp2_engine.util import ProgressEvent

__all__ = ["DemoEvent", "DemoImage", "DemoResult", "DemoSettings", "HitlRound", "HitlRun"]


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

    pretrained: str = "cp2_nuclei"
    style: str = "phase"
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
class DemoEvent(ProgressEvent):
    """Progress of the demo: ``done`` of ``total`` steps (an image, a HITL round...) finished;
    ``epoch`` is set (a tick) for the epochs of a HITL retraining within a step.

    Examples
    --------
    >>> DemoEvent.of([2, 9], "report: demo.md")
    DemoEvent(done=2, total=9, message='report: demo.md', epoch=None)
    """

    epoch: int | None = None

    @property
    def tick(self) -> bool:  # type: ignore[override]
        """An epoch of a retraining is a tick."""
        return self.epoch is not None

    @classmethod
    def of(cls, progress, message: str) -> DemoEvent:
        """The event of a ``[done, total]`` pair (the demo's running count)."""
        return cls(done=progress[0], total=progress[1], message=message)


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

    ``n_drawn`` is the number of ROIs the model missed and the annotator drew on ``image``,
    ``n_fixed`` the number it redrew because their predicted outline was wrong (IoU below the
    annotator's ``keep_iou``); ``n_human`` = drawn + fixed is the human effort. ``ap50`` /
    ``ap75`` are the mean AP of the model trained in this round on the test images.
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
    n_fixed: int = 0

    @property
    def n_human(self) -> int:
        """ROIs the human drew on this round's image: missed plus fixed."""
        return self.n_drawn + self.n_fixed


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
