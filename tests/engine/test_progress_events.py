"""One progress-event shape: every event the engine yields is a ``cp2_engine.util.ProgressEvent``
whose ``done`` / ``total`` / ``message`` mean the same in each, checked on the type tree and on
real (tiny) runs: segment_many, a 2-step training, a batch of 2 files and ``cp2 train``."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import numpy as np

import cp2_engine
from cp2_engine.util import ProgressEvent, drain

ENGINE = Path(cp2_engine.__file__).parent
#: Things a generator yields that are not progress (named so a new one is a decision).
NOT_PROGRESS = {"Row": "an experiment's result row", "ValImage": "install's validation images"}
EXPECTED = {
    "TrainStarted", "StepEvent", "EpochEvent", "CheckpointSaved", "DataPrepared", "CycleStarted",
    "CycleFinished", "Installed", "ExportProgress", "BuildEvent", "PlaneProgress",
    "SegmentProgress", "Progress", "RankProgress", "DemoEvent", "BatchProgress", "BlockDone",
    "TilesDone", "ChunkWritten",
}  # fmt: skip


def _import_event_modules() -> None:
    """Import every engine module that derives a class from an event base (subclasses exist
    once imported); ``class X(Base)`` with a base named ``...Event`` or ``...Progress``."""
    base = re.compile(r"^class \w+\(\w*(Event|Progress)\):", re.M)
    for path in ENGINE.rglob("*.py"):
        if base.search(path.read_text("utf-8")):
            rel = path.relative_to(ENGINE.parent).with_suffix("")
            importlib.import_module(".".join(rel.parts))


def _subclasses(cls) -> dict[str, type]:
    found = {}
    for sub in cls.__subclasses__():
        found[sub.__name__] = sub
        found.update(_subclasses(sub))
    return found


def _yielded_names() -> set[str]:
    """Classes constructed in a ``yield`` anywhere in the engine (``yield X(`` / ``X.of(``)."""
    pattern = re.compile(r"\byield\s+([A-Z]\w*)(?:\.of)?\(")
    return {m[1] for p in ENGINE.rglob("*.py") for m in pattern.finditer(p.read_text("utf-8"))}


def _check(events) -> None:
    """The meaning shared by every event: units done of a total (None: unknown), one line."""
    assert events
    for e in events:
        assert isinstance(e, ProgressEvent), type(e)
        assert isinstance(e.message, str) and e.message and "\n" not in e.message, e
        assert isinstance(e.done, int) and e.done >= 0, e
        assert e.total is None or e.done <= e.total, e
        assert e.fraction == (e.done / e.total if e.total else None), e


def test_every_event_type_the_engine_yields_is_the_one_shape():
    _import_event_modules()
    classes = {"ProgressEvent": ProgressEvent, **_subclasses(ProgressEvent)}
    assert classes.keys() >= EXPECTED, EXPECTED - classes.keys()
    unknown = _yielded_names() - classes.keys() - NOT_PROGRESS.keys()
    assert not unknown, f"yielded but not a ProgressEvent: {unknown}"
    assert not (NOT_PROGRESS.keys() & classes.keys())
    for name, cls in classes.items():
        fields = [f.name for f in dataclasses.fields(cls)]
        assert fields[:3] == ["done", "total", "message"], (name, fields)
        assert "step" not in fields and cls.__dataclass_params__.frozen, (name, fields)


def test_segment_many_counts_images():
    from cp2_engine.inference import Model

    events = list(Model.random(seed=0).segment_many([np.ones((16, 16))] * 2, diameter=30.0))
    _check(events)
    assert [(e.done, e.total, e.fraction) for e in events] == [(1, 2, 0.5), (2, 2, 1.0)]
    assert all(e.tick and e.segmentation.masks.shape == (16, 16) for e in events)


def test_a_two_step_training_counts_steps(tmp_path):
    from cp2_engine.synthetic import touching_cells
    from cp2_engine.training import TrainConfig, iter_train

    cells = [touching_cells((64, 64), n_cells=6, diameter=16, seed=i) for i in range(2)]
    config = TrainConfig(n_epochs=2, bsize=32, batch_size=2, min_images_per_epoch=2,
                         warmup_epochs=0, save_every=1, min_train_masks=1, device="cpu",
                         precision="fp32")  # fmt: skip
    events = []
    gen = iter_train(None, [c.image for c in cells], [c.labels for c in cells], config=config,
                     save_path=tmp_path / "m")  # fmt: skip
    drain(gen, on_event=events.append)
    _check(events)
    assert [(type(e).__name__, e.done, e.total) for e in events] == [
        ("TrainStarted", 0, 2),
        ("StepEvent", 1, 2), ("EpochEvent", 1, 2), ("CheckpointSaved", 1, 2),
        ("StepEvent", 2, 2), ("EpochEvent", 2, 2), ("CheckpointSaved", 2, 2),
    ]  # fmt: skip
    started, step, epoch, saved = events[:4]
    assert started.message == "training on 2 images; 0 skipped (too few ROIs)"
    assert step.epoch == 0 and step.message.startswith("epoch 1/2 · step 1/2 · loss ")
    assert epoch.epoch == 0 and epoch.message.startswith(f"epoch 1/2 · loss {epoch.loss:.4f}")
    assert "ETA" in epoch.message
    assert (saved.epoch, saved.path) == (0, tmp_path / "m")  # the epoch field holds an epoch
    assert saved.message == "checkpoint saved after epoch 0 (step 1)"
    assert [e.tick for e in events] == [False, True, False, False, True, False, False]


def test_a_batch_of_two_files_counts_images(tmp_path):
    from cp2_engine import io
    from cp2_engine.batch import iter_segment_batch
    from cp2_engine.inference import Model, SegmentConfig

    rng = np.random.default_rng(0)
    for i in range(2):
        io.imwrite(tmp_path / f"img{i}.tif", (rng.random((48, 48)) * 255).astype(np.uint8))
    events = []
    gen = iter_segment_batch([tmp_path], model="random", segmenter=Model.random(seed=0),
                             config=SegmentConfig(diameter=30.0))  # fmt: skip
    result = drain(gen, on_event=events.append)
    _check(events)
    assert [(e.done, e.total) for e in events] == [(0, 2), (1, 2), (2, 2)]
    assert [e.image for e in events] == ["", "img0.tif", "img1.tif"]
    assert events[-1].message == "2/2 images · img1.tif: segmented · ETA 0m00s"
    assert result.counts["segmented"] == 2


def test_cp2_train_prints_the_milestones_of_the_one_shape(tmp_path, capsys):
    """``cp2 train`` (the user's door) prints every non-tick event's message as a line."""
    import tifffile

    from cp2_engine.cli import main
    from cp2_engine.synthetic import touching_cells

    n_images = 2
    for i in range(n_images):
        cell = touching_cells((64, 64), n_cells=6, diameter=16, seed=i)
        tifffile.imwrite(tmp_path / f"im{i}.tif", cell.image)
        tifffile.imwrite(tmp_path / f"im{i}_masks.tif", cell.labels.astype(np.uint16))
    argv = ["train", "--images", str(tmp_path), "--out", str(tmp_path / "out"), "--name", "m",
            "--epochs", "1", "--bsize", "32", "--batch-size", "2", "--device", "cpu",
            "--precision", "fp32", "--min-train-masks", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"training on {n_images} images; 0 skipped (too few ROIs)" in lines
    assert any(line.startswith("epoch 1/1 · loss ") and "ETA" in line for line in lines)
    assert any(re.fullmatch(r"checkpoint saved after epoch 0 \(step \d+\)", x) for x in lines)
    assert not any(line.startswith("epoch 1/1 · step") for line in lines)  # ticks: bar only
