"""The demo's human-in-the-loop part: a simulated annotator corrects, the model is retrained.

One starting point (the bundled model, or random weights) goes through ``n_rounds`` rounds of
predict, correct, accept and fine-tune; after each round the model is scored on held-out images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._settings import DemoEvent, DemoSettings, HitlRound, HitlRun

__all__: list[str] = []


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
            yield DemoEvent(
                event.epoch,
                done=step,
                total=total,
                message=f"{label}: epoch {event.epoch + 1} loss {event.loss:.3f}",
            )


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
    yield DemoEvent.of(progress, f"HITL {init} ({start}): start AP@0.5 {ap50:.3f}")
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
                                tuple(losses), n_fixed=correction.n_fixed))  # fmt: skip
        progress[0] += 1
        yield DemoEvent.of(progress, f"HITL {init} round {r}: drew {correction.n_drawn} + fixed "
                                   f"{correction.n_fixed} ROIs, "
                                   f"test AP@0.5 {ap50:.3f}")  # fmt: skip
    for ckpt in (project.folder / "models").glob("round_*.ckpt"):
        ckpt.unlink()  # resume checkpoints (53 MB each); the round models stay
    return HitlRun(init, start, project.folder, tuple(rounds), (first, last))
