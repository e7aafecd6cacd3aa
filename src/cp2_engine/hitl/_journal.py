"""The row journal of an experiment: finished result rows on disk, so a killed run resumes.

A journal is a folder (``cp2 experiment`` uses ``<out>/<experiment>.journal/``) holding

``run.json``
    The fingerprint of the run (experiment, settings, data, pretrained model) and the folder of
    its HITL projects.
``<key>.json``
    One finished row each, written atomically when the row is done. ``*.pending.json`` files
    hold what an online round decided before it accepted its image (the image and the ROIs the
    annotator drew), so a round killed after the accept is finished without redoing it.

Run again with the same settings, the experiment replays the journalled rows instead of
recomputing them; a journal of other settings raises ValueError unless ``restart`` is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cp2_engine.util import atomic_write_file

logger = logging.getLogger(__name__)

__all__: list[str] = []


def _digest_arrays(digest, arrays) -> None:
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())


def _fingerprint(experiment: str, data, settings, pretrained) -> str:
    """sha256 of what decides an experiment's rows: its name, settings, data and start model."""
    digest = hashlib.sha256(experiment.encode())
    digest.update(json.dumps(asdict(settings), sort_keys=True, default=str).encode())
    digest.update(f"{data.diameter!r}".encode())
    for part in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        digest.update(f"|{len(part)}|".encode())
        _digest_arrays(digest, part)
    digest.update(str(pretrained).encode())
    if pretrained is not None and Path(pretrained).is_file():
        from cp2_engine.network import sha256_file

        digest.update(sha256_file(pretrained).encode())
    return digest.hexdigest()


class RowJournal:
    """Finished rows of one experiment run (``folder=None``: a journal that keeps nothing)."""

    fingerprint = staticmethod(_fingerprint)

    def __init__(self, folder: str | os.PathLike | None, *, fingerprint: str = "",
                 restart: bool = False, workdir: str | os.PathLike | None = None):  # fmt: skip
        self.folder = Path(folder) if folder is not None else None
        self.workdir = Path(workdir) if workdir is not None else None
        self.resumed = False  # True when the folder held this run's journal already
        if self.folder is None:
            return
        run_file = self.folder / "run.json"
        if restart and self.folder.exists():
            shutil.rmtree(self.folder)
        if run_file.is_file():
            run = json.loads(run_file.read_text(encoding="utf-8"))
            if run.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{self.folder} holds the rows of an interrupted or finished run with other "
                    "settings, data or pretrained model; run with --restart (restart=True) to "
                    "discard them, or write to another output folder"
                )
            if run.get("workdir"):
                self.workdir = Path(run["workdir"])
            self.resumed = True
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        run = {"fingerprint": fingerprint,
               "workdir": str(self.workdir) if self.workdir is not None else None}  # fmt: skip
        self._write(run_file, run)

    @staticmethod
    def _write(path: Path, record: Any) -> None:
        text = json.dumps(record, indent=1).encode("utf-8")
        atomic_write_file(path, lambda fh: fh.write(text))

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The journalled record ``key``, or None."""
        if self.folder is None or not self._path(key).is_file():
            return None
        return json.loads(self._path(key).read_text(encoding="utf-8"))

    def put(self, key: str, record: dict) -> None:
        """Journal ``record`` under ``key`` (atomically)."""
        if self.folder is not None:
            self._write(self._path(key), record)

    def n_rows(self) -> int:
        """How many finished rows the journal holds."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        return sum(1 for p in self.folder.glob("*.json")
                   if p.name != "run.json" and not p.name.endswith(".pending.json"))  # fmt: skip


def finished_model(path: Path, recipe: str) -> bool:
    """Whether ``path`` is a complete model file (sha256 checked) made by ``recipe``."""
    from cp2_engine.network import ModelFileError, read_metadata, verify_sha256

    try:
        return bool(path.is_file() and verify_sha256(path)
                    and read_metadata(path).get("pretrain_recipe") == recipe)  # fmt: skip
    except ModelFileError:
        return False


def open_project(folder: Path, journal: RowJournal, **create: Any):
    """The HITL project in ``folder`` when resuming a journalled run, else a new one there."""
    from cp2_engine.hitl._project import HitlProject

    if journal.resumed and (folder / "project.json").is_file():
        logger.info("resuming the HITL project %s", folder)
        return HitlProject.open(folder, device=create.get("device", "auto"))
    return HitlProject.create(folder, **create)


def online_round(project, round_no: int, annotator, journal: RowJournal, key: str, choose):
    """Online round ``round_no`` (1-based), which a kill may have interrupted.

    Picks an image (``choose(project)``), predicts, corrects and accepts it, unless the
    journal's pending record says this round's image is accepted already; then retrains
    (``iter_retrain`` resumes an interrupted round; a round registered already is reused).
    Yields the training events; returns ``(n_drawn, train_seconds, model)``.
    """
    pending = journal.get(f"{key}.pending")
    if pending is not None and project.is_accepted(pending["name"]):
        n_drawn = int(pending["drawn"])
    else:
        name = choose(project)
        seg = project.predict(name)
        correction = annotator.correct(project.truth(name), seg.masks)
        n_drawn = correction.n_drawn
        journal.put(f"{key}.pending", {"name": name, "drawn": n_drawn})
        project.accept(name, correction.labels)
    if len(project.rounds) >= round_no:  # registered before the crash
        history = project.history()  # written just after registering: may lack this round
        seconds = history[round_no - 1].train_seconds if len(history) >= round_no else 0.0
    else:
        record = yield from project.iter_retrain(evaluate=False)
        seconds = record.train_seconds
    return n_drawn, seconds, project.load_model(project.rounds[round_no - 1])
