"""Retraining rounds of a HITL project: fine-tune on the accepted images, register the model.

:class:`RetrainMixin` holds the retraining methods of :class:`cp2_engine.hitl.HitlProject`; the
functions below are the glue to the model and training engines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cp2_engine.hitl._project_files import _now, _write_json, _write_text
from cp2_engine.util import drain

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundRecord:
    """One retraining round, as written to ``history.jsonl``.

    Attributes
    ----------
    round : int
        1 for the first retraining.
    model : str
        Path of the new model, relative to the project folder.
    n_images : int
        Accepted images the model was trained on.
    n_rois : int
        ROIs in those images.
    n_drawn : int
        ROIs the human drew or edited in those images (``RoiAccounting.n_human`` summed).
    train_seconds : float
        Wall time of the training.
    ap50 : float or None
        Mean AP at IoU 0.5 of the new model on the images with ground truth that are not yet
        accepted (held out); None when there are none or evaluation was off.
    created : str
        ISO time stamp.
    """

    round: int
    model: str
    n_images: int
    n_rois: int
    n_drawn: int
    train_seconds: float
    ap50: float | None
    created: str


class RetrainMixin:
    """The retraining methods of :class:`~cp2_engine.hitl.HitlProject`.

    They use the project's ``folder``, ``device``, ``_meta``, ``names``, ``accepted_names``,
    ``image``, ``corrected``, ``truth``, ``accounting``, ``is_accepted``, ``load_model``,
    ``_path`` and ``history``.
    """

    # ------------------------------------------------------------------------ retrain
    def training_data(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Images and corrected labels of every accepted image."""
        names = self.accepted_names()
        return [self.image(n) for n in names], [self.corrected(n) for n in names]

    def iter_retrain(
        self, *, config: Any = None, evaluate: bool = True, restart: bool = False
    ) -> Generator[Any, None, RoundRecord]:
        """Fine-tune the initial model on ALL accepted images (online mode); register it.

        Yields the training events of ``cp2_engine.training.iter_train``. Closing the generator
        early cancels the round: no model is registered and the project is unchanged.

        The round trains into ``models/.unfinished/`` (checkpoint every ``save_every`` epochs);
        its model appears as ``models/round_NNN`` only when it is registered. A round that was
        interrupted (closed, killed, power loss) is resumed by the next call, from its last
        checkpoint (``TrainStarted.start_epoch`` > 0), with the uninterrupted result.

        Parameters
        ----------
        config : TrainConfig or dict, optional
            Overrides the project's training settings for this round.
        evaluate : bool
            Compute the new model's AP on held-out images with ground truth.
        restart : bool
            Discard an interrupted round and train it again from epoch 0. Without it, an
            interrupted round whose accepted labels or settings have changed since raises
            ValueError.

        Returns
        -------
        RoundRecord
            Via ``StopIteration.value``; :meth:`retrain` returns it directly.
        """
        images, labels = self.training_data()
        if not images:
            raise ValueError("no accepted images to train on; accept() at least one first")
        round_no = len(self._meta["rounds"]) + 1
        rel = f"models/round_{round_no:03d}"
        _remove_unregistered(self.folder / "models", self._meta["rounds"], self.folder / rel)
        cfg = config if config is not None else self._meta.get("train_config")
        metadata = {"hitl_round": round_no, "hitl_images": self.accepted_names()}
        t0 = time.perf_counter()
        yield from _train_round(
            self.initial_model,
            images,
            labels,
            config=cfg,
            save_path=self.folder / rel,
            folder=self.folder,
            device=self.device,
            metadata=metadata,
            fingerprint=self._round_fingerprint(cfg),
            restart=restart,
        )
        seconds = time.perf_counter() - t0
        return self._register_round(round_no, rel, labels, seconds, evaluate=evaluate)

    def retrain(
        self, *, config: Any = None, evaluate: bool = True, restart: bool = False
    ) -> RoundRecord:
        """Run :meth:`iter_retrain` to the end and return its record."""
        gen = self.iter_retrain(config=config, evaluate=evaluate, restart=restart)
        return drain(gen)

    def _round_fingerprint(self, config: Any) -> str:
        """Digest of what a round trains on: initial model, settings, accepted labels' bytes."""
        digest = hashlib.sha256(f"{self.initial_model}|{config!r}".encode())
        for name in self.accepted_names():
            digest.update(name.encode() + b"\0" + self._path("masks", name).read_bytes())
        return digest.hexdigest()

    def _register_round(
        self, round_no: int, rel: str, labels: list, seconds: float, *, evaluate: bool
    ) -> RoundRecord:
        from cp2_engine.training import discard_unfinished

        record = RoundRecord(
            round=round_no,
            model=rel,
            n_images=len(labels),
            n_rois=int(sum(len(np.unique(lab[lab > 0])) for lab in labels)),
            n_drawn=int(sum(self.accounting(n).n_human for n in self.accepted_names())),
            train_seconds=round(seconds, 3),
            ap50=None,
            created=_now(),
        )
        if evaluate:
            record = dataclasses.replace(record, ap50=self._heldout_ap50(rel))
        meta = dict(self._meta, current_model=rel, rounds=[*self._meta["rounds"], rel])
        history = [dataclasses.asdict(r) for r in self.history()] + [dataclasses.asdict(record)]
        text = "".join(json.dumps(h) + "\n" for h in history)
        _write_json(self.folder / "project.json", meta)  # the round is registered from here on
        self._meta = meta
        _write_text(self.folder / "history.jsonl", text)
        discard_unfinished(self.folder / rel)
        logger.info("HITL round %d registered: %s", round_no, record)
        return record

    def _heldout_ap50(self, spec: str) -> float | None:
        """Mean AP@0.5 of model ``spec`` on not-yet-accepted images with ground truth."""
        held = [n for n in self.names if not self.is_accepted(n) and self.truth(n) is not None]
        if not held:
            return None
        model = self.load_model(spec)
        scores = [
            _ap50(self.truth(n), model.segment(self.image(n), diameter=self.diameter).masks)
            for n in held
        ]
        return float(np.mean(scores))


# ------------------------------------------------------------------ model-engine glue
def _load_model(spec: str, *, folder: Path, device: str):
    """Load a project model: ``"scratch"``, a path relative to the project, or a model name."""
    from cp2_engine.inference import Model

    if spec == "scratch":
        return Model.random(seed=0, device=device)
    local = folder / spec
    return Model.load(str(local) if local.is_file() else spec, device=device)


def _ap50(truth: np.ndarray, pred: np.ndarray) -> float:
    from cp2_engine.metrics import average_precision

    return float(average_precision(truth, pred, thresholds=(0.5,)).ap[0, 0])


def _train_config(config: Any, device: str):
    """A TrainConfig in online mode from a TrainConfig, a dict or None."""
    from cp2_engine.training import TrainConfig

    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    elif not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, a dict or None, got {type(config)}")
    if config.mode != "online":
        logger.info("HITL retraining runs in online mode; ignoring mode=%r", config.mode)
    device = config.device if config.device != "auto" else device
    return dataclasses.replace(config, mode="online", device=device)


def _train_round(
    initial_model: str,
    images: list,
    labels: list,
    *,
    config: Any,
    save_path: Path,
    folder: Path,
    device: str,
    metadata: dict,
    fingerprint: str,
    restart: bool,
):
    """Fine-tune ``initial_model`` on the accepted images (resuming an interrupted run); move
    the model onto ``save_path`` (its checkpoint stays in ``.unfinished/`` until registered)."""
    from cp2_engine.training import finish_unfinished, iter_train_resumable

    cfg = _train_config(config, device)
    local = folder / initial_model
    start = str(local) if local.is_file() else initial_model
    save_path.parent.mkdir(parents=True, exist_ok=True)
    result = yield from iter_train_resumable(
        start, images, labels, config=cfg, save_path=save_path, fingerprint=fingerprint,
        restart=restart,
    )  # fmt: skip
    finish_unfinished(save_path, result.net, metadata=metadata)
    return result


_ROUND_FILE = re.compile(r"round_(\d{3,})(\.json|\.ckpt|_log\.jsonl|_loss\.png)?")


def _remove_unregistered(models: Path, rounds: list, next_round: Path) -> None:
    """Remove files of unregistered rounds (a crash between moving a round's model into place
    and registering it, or the in-place training of cp2 before resume); the temp files of
    interrupted atomic writes go too. An old in-place checkpoint of the next round becomes its
    resume checkpoint."""
    from cp2_engine.training import checkpoint_path, unfinished_path

    if not models.is_dir():
        return
    registered = {Path(r).name for r in rounds}
    old_ckpt, new_ckpt = checkpoint_path(next_round), checkpoint_path(unfinished_path(next_round))
    if old_ckpt.is_file() and not new_ckpt.exists():
        new_ckpt.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old_ckpt, new_ckpt)
        logger.warning("resuming %s from the checkpoint of an older cp2", next_round.name)
    for path in models.iterdir():
        match = _ROUND_FILE.fullmatch(path.name)
        stray = match is not None and f"round_{match.group(1)}" not in registered
        if stray or (path.name.startswith(".round_") and path.name.endswith(".tmp")):
            logger.warning("removing %s: not part of a registered round", path)
            path.unlink()
