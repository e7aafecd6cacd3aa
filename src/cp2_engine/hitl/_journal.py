"""The journal of the experiments: finished points on disk, so a killed run resumes.

A journal is a folder (``cp2 experiment`` uses ``<out>/journal/``) holding

``run.json``
    The journal's format (``RowJournal`` refuses a folder of another format unless
    ``restart``).
``<key>.json``
    One finished point each (an offline training, an online round, a starting model's AP),
    written atomically when it is done; the experiments put a digest of what the point depends
    on into its key (:func:`point_key`), so points of other settings never collide and are
    shared between experiments. ``*.pending.json`` files hold what an online round decided
    before it accepted its image (the image and the ROIs the annotator drew and fixed), so a
    round killed after the accept is finished without redoing it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
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


class RowJournal:
    """Finished points of experiments (``folder=None``: a journal that keeps nothing)."""

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
                    f"{self.folder} holds a journal of another format or run (e.g. of an older "
                    "cp2 experiment); run with --restart (restart=True) to discard it, or write "
                    "to another output folder"
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


def online_round(project, round_no: int, annotator, journal: RowJournal, key: str, choose):
    """Online round ``round_no`` (1-based), which a kill may have interrupted.

    Picks an image (``choose(project)``), predicts, corrects and accepts it, unless the
    journal's pending record says this round's image is accepted already; then retrains
    (``iter_retrain`` resumes an interrupted round; a round registered already is reused).
    Yields the training events; returns ``(name, n_drawn, n_fixed, train_seconds, model)``.
    """
    pending = journal.get(f"{key}.pending")
    if pending is not None and project.is_accepted(pending["name"]):
        name, n_drawn, n_fixed = pending["name"], int(pending["drawn"]), int(pending["fixed"])
    else:
        name = choose(project)
        seg = project.predict(name)
        correction = annotator.correct(project.truth(name), seg.masks)
        n_drawn, n_fixed = correction.n_drawn, correction.n_fixed
        journal.put(f"{key}.pending", {"name": name, "drawn": n_drawn, "fixed": n_fixed})
        project.accept(name, correction.labels)
    if len(project.rounds) >= round_no:  # registered before the crash
        history = project.history()  # written just after registering: may lack this round
        seconds = history[round_no - 1].train_seconds if len(history) >= round_no else 0.0
    else:
        record = yield from project.iter_retrain(evaluate=False)
        seconds = record.train_seconds
    return name, n_drawn, n_fixed, seconds, project.load_model(project.rounds[round_no - 1])


def digest_data(data) -> str:
    """sha256 of an experiment's images, labels and diameter (what every result depends on)."""
    digest = hashlib.sha256(f"{data.diameter!r}".encode())
    for part in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        digest.update(f"|{len(part)}|".encode())
        _digest_arrays(digest, part)
    return digest.hexdigest()


def digest_start(spec: str | os.PathLike) -> str:
    """What identifies a starting model: the sha256 of its file, else its name."""
    if Path(spec).is_file():
        from cp2_engine.network import sha256_file

        return sha256_file(spec)
    return str(spec)


def point_key(*parts: Any) -> str:
    """A short key (16 hex digits) for a result that depends on ``parts`` (JSON-able values)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reusable_rounds(journal: RowJournal, tag: str, n_rounds: int, project_dir: Path) -> int:
    """How many journalled rounds of an online strategy a run may take from the journal.

    All of them when every round is journalled. Otherwise the next round continues the HITL
    project that holds the rounds before it, and that project (with its round models) lives
    in the work folder, which stays on the machine that ran it while the journal may travel:
    only the rounds the project holds are reused (none without it), the rest are run again.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> journal = RowJournal(folder / "journal")
    >>> journal.put("s-r001", {"ap50": 0.5})  # round 1 of strategy "s" journalled elsewhere
    >>> reusable_rounds(journal, "s", 2, folder / "journal" / "work" / "s")  # no project here
    0
    """
    keys = [f"{tag}-r{k:03d}" for k in range(1, n_rounds + 1)]
    n_rows = sum(journal.get(key) is not None for key in keys)
    if n_rows == n_rounds:
        return n_rounds
    held = 0
    if (project_dir / "project.json").is_file():
        from cp2_engine.hitl._project import HitlProject

        held = len(HitlProject.open(project_dir).rounds)
    if held < n_rows:
        logger.warning(
            "%s: %d rounds are journalled but the work folder holds %d (it did not come "
            "with the journal); running the strategy on from round %d", tag, n_rows, held,
            held + 1,
        )  # fmt: skip
    return held
