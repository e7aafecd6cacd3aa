"""A human-in-the-loop project on disk: images, predictions, corrections, models and history.

Layout of a project folder::

    project.json                    schema version, images, initial model, settings, rounds
    images/<name>.tif               the images (copied in at creation)
    truth/<name>_masks.tif          optional ground truth (simulations, AP in the history)
    predictions/<name>_pred.tif     the latest prediction for each image
    corrected/<name>_masks.tif      the labels the human accepted
    corrected/<name>_provenance.json    per-ROI accounting (accepted/edited/drawn/deleted)
    corrected/backup/               earlier corrections, kept when one is overwritten
    models/round_001, round_002 ... the chain of fine-tuned models (each with a .json sidecar)
    history.jsonl                   one line per retraining round

Every file is written atomically (a temp file in the same folder, then :func:`os.replace`), so a
crash leaves either the old or the new file. The corrected labels are the project's ground truth:
a corrected image counts as accepted when its ``_masks.tif`` exists, and :meth:`HitlProject.accept`
refuses to replace it unless ``overwrite=True`` (then the old one is moved to ``backup/``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cp2_engine.hitl._accounting import RoiAccounting, account_rois, check_labels
from cp2_engine.io import atomic_write, imread, imwrite
from cp2_engine.util import drain

logger = logging.getLogger(__name__)

__all__ = ["SCHEMA_VERSION", "HitlProject", "ProjectStatus", "RoundRecord"]

#: Version of the ``project.json`` layout.
SCHEMA_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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


@dataclass(frozen=True)
class ProjectStatus:
    """Where a project stands (see :meth:`HitlProject.status`)."""

    n_images: int
    n_accepted: int
    n_rounds: int
    current_model: str
    next_image: str | None
    n_drawn_total: int


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=1) + "\n")


def _write_tif(path: Path, array: np.ndarray, *, overwrite: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    imwrite(path, array, overwrite=overwrite)


def _labels_dtype(labels: np.ndarray) -> np.ndarray:
    big = labels.max(initial=0) > np.iinfo(np.uint16).max
    return labels.astype(np.uint32 if big else np.uint16)


def _check_image(image: Any, what: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty (H, W) or (H, W, C) image, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) and not np.iscomplexobj(arr)):
        raise TypeError(f"{what} must hold real numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr


def _spatial_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(H, W) of an image shape: (H, W), (H, W, C) or channel-first (C, H, W) with C < 10."""
    if len(shape) == 3 and shape[0] < 10 <= min(shape[1], shape[2]):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _load_input(item: Any, what: str) -> tuple[np.ndarray, str | None]:
    """An image from a path or an array; also return the path's stem as a name suggestion."""
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"{what}: no such image file {path}")
        return _check_image(imread(path), what), path.stem
    return _check_image(item, what), None


def _unique_names(suggested: Sequence[str | None]) -> list[str]:
    names: list[str] = []
    for i, name in enumerate(suggested):
        base = re.sub(r"[^A-Za-z0-9._-]", "_", name) if name else f"image_{i:03d}"
        base = base.lstrip("._-") or f"image_{i:03d}"
        candidate, k = base, 1
        while candidate in names:
            candidate, k = f"{base}_{k}", k + 1
        names.append(candidate)
    return names


class HitlProject:
    """A human-in-the-loop project folder (see the module docstring for the layout).

    Create one with :meth:`create`, reopen it with :meth:`open`. The loop is
    ``name = project.next_image()`` → ``project.predict(name)`` → the human corrects →
    ``project.accept(name, labels)`` → ``project.retrain()`` → next image.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> folder = Path(tempfile.mkdtemp()) / "proj"
    >>> img = np.zeros((32, 32), np.float32)
    >>> p = HitlProject.create(folder, images=[img, img], initial_model="scratch")
    >>> p.next_image()
    'image_000'
    >>> labels = np.zeros((32, 32), np.uint16); labels[4:12, 4:12] = 1
    >>> p.accept("image_000", labels).n_drawn
    1
    >>> HitlProject.open(folder).next_image()
    'image_001'
    """

    def __init__(self, folder: Path, meta: dict, *, device: str = "auto"):
        self.folder = folder
        self._meta = meta
        self.device = device
        self._model_cache: tuple[str, Any] | None = None

    # ----------------------------------------------------------------- creation and opening
    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        *,
        images: Sequence[Any],
        initial_model: str = "cyto2",
        train_config: Any = None,
        ground_truth: Sequence[Any] | None = None,
        names: Sequence[str] | None = None,
        diameter: float | None = None,
        device: str = "auto",
    ) -> HitlProject:
        """Create a new project in ``folder`` (which must not hold a project yet).

        Parameters
        ----------
        folder : path
            Project folder; created if missing.
        images : sequence of paths or arrays
            The images to annotate, in order. Paths keep their file stem as the image name.
        initial_model : str
            Model every round fine-tunes: a name or path for ``Model.load``, or ``"scratch"``
            for random weights.
        train_config : TrainConfig or dict, optional
            Training settings for each round (online mode is forced); None = defaults.
        ground_truth : sequence of label arrays or paths, optional
            True labels aligned with ``images`` (used for AP in the history and by simulations).
        names : sequence of str, optional
            Image names (letters, digits, ``._-``); default from file stems or ``image_000``...
        diameter : float, optional
            Cell diameter for predictions; None = the model's own (``diam_labels``).
        device : str
            Torch device for predictions and training.

        Returns
        -------
        HitlProject

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> p = HitlProject.create(Path(tempfile.mkdtemp()) / "p",
        ...                        images=[np.ones((8, 8))], initial_model="scratch")
        >>> p.names
        ['image_000']
        """
        folder = Path(folder)
        if (folder / "project.json").exists():
            raise FileExistsError(f"{folder} already holds a project; use HitlProject.open")
        if isinstance(images, np.ndarray | str | os.PathLike):
            raise TypeError("images must be a list of images (paths or arrays), not one image")
        if len(images) == 0:
            raise ValueError("images must hold at least one image (path or array)")
        loaded = [_load_input(im, f"images[{i}]") for i, im in enumerate(images)]
        names = list(names) if names is not None else _unique_names([n for _, n in loaded])
        cls._check_names(names, len(loaded))
        truths = cls._check_truth(ground_truth, [a for a, _ in loaded])
        for sub in ("images", "predictions", "corrected", "models"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for (arr, _), name in zip(loaded, names):
            _write_tif(folder / "images" / f"{name}.tif", arr)
        for truth, name in zip(truths, names):
            if truth is not None:
                _write_tif(folder / "truth" / f"{name}_masks.tif", _labels_dtype(truth))
        meta = {
            "schema_version": SCHEMA_VERSION,
            "created": _now(),
            "images": [{"name": n, "shape": list(a.shape)} for (a, _), n in zip(loaded, names)],
            "initial_model": str(initial_model),
            "train_config": _config_to_dict(train_config),
            "diameter": diameter,
            "current_model": str(initial_model),
            "rounds": [],
        }
        _write_json(folder / "project.json", meta)
        logger.info("created HITL project %s with %d images", folder, len(names))
        return cls(folder, meta, device=device)

    @staticmethod
    def _check_names(names: list[str], n: int) -> None:
        if len(names) != n:
            raise ValueError(f"names must have one entry per image ({n}), got {len(names)}")
        if len(set(names)) != n:
            raise ValueError(f"image names must be unique, got {names}")
        bad = [x for x in names if not _NAME_RE.match(x)]
        if bad:
            raise ValueError(f"image names may hold only letters, digits and ._- : {bad}")

    @staticmethod
    def _check_truth(truth: Sequence[Any] | None, images: list[np.ndarray]) -> list:
        if truth is None:
            return [None] * len(images)
        if len(truth) != len(images):
            raise ValueError(f"ground_truth needs one entry per image ({len(images)})")
        out = []
        for i, (t, img) in enumerate(zip(truth, images)):
            if t is None:
                out.append(None)
                continue
            lab = check_labels(
                imread(t) if isinstance(t, str | os.PathLike) else t,
                name=f"ground_truth[{i}]",
            )
            if lab.shape != _spatial_shape(img.shape):
                raise ValueError(
                    f"ground_truth[{i}] shape {lab.shape} != image {_spatial_shape(img.shape)}"
                )
            out.append(lab)
        return out

    @classmethod
    def open(cls, folder: str | os.PathLike, *, device: str = "auto") -> HitlProject:
        """Open an existing project and resume where it stopped.

        Raises FileNotFoundError when there is no ``project.json`` and ValueError when it is
        corrupt (the folder is left untouched).

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = HitlProject.create(folder, images=[np.ones((8, 8))], initial_model="scratch")
        >>> HitlProject.open(folder).status().n_images
        1
        """
        folder = Path(folder)
        path = folder / "project.json"
        if not path.is_file():
            raise FileNotFoundError(f"no HITL project in {folder} (missing project.json)")
        try:
            meta = json.loads(path.read_text())
            version = meta["schema_version"]
            _ = [im["name"] for im in meta["images"]], meta["initial_model"], meta["rounds"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise ValueError(f"corrupt project file {path}: {err!r}; nothing was changed") from err
        if version != SCHEMA_VERSION:
            raise ValueError(f"{path} has schema version {version}, expected {SCHEMA_VERSION}")
        return cls(folder, meta, device=device)

    # ------------------------------------------------------------------------- state
    @property
    def names(self) -> list[str]:
        """Image names, in project order."""
        return [im["name"] for im in self._meta["images"]]

    @property
    def initial_model(self) -> str:
        """The model every retraining round starts from."""
        return self._meta["initial_model"]

    @property
    def current_model(self) -> str:
        """The model predictions use: the latest round's, else the initial model."""
        return self._meta["current_model"]

    @property
    def diameter(self) -> float | None:
        """Diameter used for predictions (None = the model's own)."""
        return self._meta.get("diameter")

    def _check_name(self, name: str) -> None:
        if name not in self.names:
            raise ValueError(f"unknown image name {name!r}; the project has {self.names}")

    def _path(self, kind: str, name: str) -> Path:
        rel = {
            "image": f"images/{name}.tif",
            "truth": f"truth/{name}_masks.tif",
            "pred": f"predictions/{name}_pred.tif",
            "masks": f"corrected/{name}_masks.tif",
            "prov": f"corrected/{name}_provenance.json",
        }[kind]
        return self.folder / rel

    def _spatial(self, name: str) -> tuple[int, int]:
        return _spatial_shape(self._meta["images"][self.names.index(name)]["shape"])

    def image(self, name: str) -> np.ndarray:
        """The stored image ``name``."""
        self._check_name(name)
        return imread(self._path("image", name))

    def truth(self, name: str) -> np.ndarray | None:
        """The ground truth of ``name``, or None when the project has none for it."""
        self._check_name(name)
        path = self._path("truth", name)
        return imread(path) if path.is_file() else None

    def prediction(self, name: str) -> np.ndarray | None:
        """The latest stored prediction of ``name``, or None."""
        self._check_name(name)
        path = self._path("pred", name)
        return imread(path) if path.is_file() else None

    def corrected(self, name: str) -> np.ndarray | None:
        """The accepted labels of ``name``, or None when not accepted yet."""
        self._check_name(name)
        path = self._path("masks", name)
        return imread(path) if path.is_file() else None

    def is_accepted(self, name: str) -> bool:
        """Whether ``name`` has accepted (corrected) labels."""
        self._check_name(name)
        return self._path("masks", name).is_file()

    def accepted_names(self) -> list[str]:
        """Names of the accepted images, in project order."""
        return [n for n in self.names if self._path("masks", n).is_file()]

    def accounting(self, name: str) -> RoiAccounting | None:
        """The stored ROI accounting of an accepted image (recomputed if its file is missing)."""
        if not self.is_accepted(name):
            return None
        path = self._path("prov", name)
        if path.is_file():
            return RoiAccounting.from_dict(json.loads(path.read_text())["accounting"])
        logger.warning("provenance of %s missing; recomputing it from the prediction", name)
        return self._account(name, self.corrected(name))

    def next_image(self) -> str | None:
        """The first image not accepted yet, or None when all are.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> p = HitlProject.create(Path(tempfile.mkdtemp()), images=[np.ones((8, 8))],
        ...                        initial_model="scratch")
        >>> p.next_image()
        'image_000'
        """
        return next((n for n in self.names if not self.is_accepted(n)), None)

    def history(self) -> list[RoundRecord]:
        """The retraining rounds so far, oldest first."""
        path = self.folder / "history.jsonl"
        if not path.is_file():
            return []
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        return [RoundRecord(**json.loads(ln)) for ln in lines]

    def status(self) -> ProjectStatus:
        """Counts of images, accepted images, rounds, and human-drawn ROIs so far.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> p = HitlProject.create(Path(tempfile.mkdtemp()), images=[np.ones((8, 8))],
        ...                        initial_model="scratch")
        >>> p.status().n_accepted
        0
        """
        accepted = self.accepted_names()
        drawn = sum(self.accounting(n).n_human for n in accepted)
        return ProjectStatus(
            n_images=len(self.names),
            n_accepted=len(accepted),
            n_rounds=len(self._meta["rounds"]),
            current_model=self.current_model,
            next_image=self.next_image(),
            n_drawn_total=drawn,
        )

    # ------------------------------------------------------------------ predict / accept
    def load_model(self, spec: str | None = None):
        """Load ``spec`` (default: the current model) as a ``Model``, cached."""
        spec = spec or self.current_model
        if self._model_cache is None or self._model_cache[0] != spec:
            self._model_cache = (spec, _load_model(spec, folder=self.folder, device=self.device))
        return self._model_cache[1]

    def predict(self, name: str, **segment_kwargs):
        """Segment image ``name`` with the latest model and store the prediction.

        Parameters
        ----------
        name : str
            An image of the project.
        **segment_kwargs
            Passed to ``Model.segment`` (``diameter`` defaults to the project's).

        Returns
        -------
        Segmentation
        """
        self._check_name(name)
        model = self.load_model()
        segment_kwargs.setdefault("diameter", self.diameter)
        seg = model.segment(self.image(name), **segment_kwargs)
        self.set_prediction(name, seg.masks, model=self.current_model)
        return seg

    def set_prediction(self, name: str, masks, *, model: str | None) -> None:
        """Store ``masks`` as the model's prediction of ``name`` (the base of its accounting).

        For predictions made outside :meth:`predict` (e.g. by the napari plugin).

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> p = HitlProject.create(Path(tempfile.mkdtemp()), images=[np.ones((8, 8))],
        ...                        initial_model="scratch")
        >>> p.set_prediction("image_000", np.eye(8, dtype=int), model="m")
        >>> int(p.prediction("image_000").max())
        1
        """
        self._check_name(name)
        masks = np.asarray(masks)
        shape = self._spatial(name)
        if masks.shape != shape:
            raise ValueError(f"prediction of {name!r} must have shape {shape}, got {masks.shape}")
        _write_tif(self._path("pred", name), _labels_dtype(masks))
        _write_json(
            self.folder / "predictions" / f"{name}_pred.json",
            {"model": model, "created": _now()},
        )

    def _account(self, name: str, labels: np.ndarray) -> RoiAccounting:
        pred = self.prediction(name)
        if pred is None:
            pred = np.zeros(labels.shape, np.uint16)
        return account_rois(pred, labels)

    def accept(
        self,
        name: str,
        corrected_labels: np.ndarray,
        *,
        overwrite: bool = False,
        prediction: np.ndarray | None = None,
        prediction_model: str | None = None,
    ) -> RoiAccounting:
        """Store the human's corrected labels of ``name`` and their ROI accounting.

        Parameters
        ----------
        name : str
            An image of the project.
        corrected_labels : ndarray of int, shape (H, W)
            The corrected labels (0 = background).
        overwrite : bool
            Replace labels accepted earlier; the old files move to ``corrected/backup/``.
            Without it, accepting an accepted image raises FileExistsError.
        prediction : ndarray of int, shape (H, W), optional
            The model prediction the human corrected, when it was made outside the project
            (e.g. in napari before the project was opened). It is stored as the image's
            prediction (made by ``prediction_model``) when it differs from the stored one,
            so that the accounting counts its ROIs as the model's.
        prediction_model : str, optional
            Name or path of the model that made ``prediction``.

        Returns
        -------
        RoiAccounting
            Accounting against the stored prediction (all ROIs are "drawn" without one).
        """
        self._check_name(name)
        labels = check_labels(corrected_labels, name="corrected_labels")
        shape = self._spatial(name)
        if labels.shape != shape:
            raise ValueError(f"corrected_labels shape {labels.shape} != image {name!r} {shape}")
        if self.is_accepted(name) and not overwrite:
            raise FileExistsError(
                f"{name!r} is already accepted; pass overwrite=True to replace it (the old "
                "labels are kept in corrected/backup/)"
            )
        if prediction is not None:
            stored = self.prediction(name)
            if stored is None or not np.array_equal(stored, prediction):
                self.set_prediction(name, prediction, model=prediction_model)
        if self.is_accepted(name):
            self._backup(name)
        acc = self._account(name, labels)
        pred_meta = self.folder / "predictions" / f"{name}_pred.json"
        record = {
            "image": name,
            "created": _now(),
            "pred_model": json.loads(pred_meta.read_text())["model"]
            if pred_meta.is_file()
            else None,
            "accounting": acc.to_dict(),
        }
        _write_json(self._path("prov", name), record)
        _write_tif(self._path("masks", name), _labels_dtype(labels), overwrite=overwrite)
        logger.info("accepted %s: %s", name, acc)
        return acc

    def _backup(self, name: str) -> None:
        backup = self.folder / "corrected" / "backup"
        backup.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f")
        for kind in ("masks", "prov"):
            src = self._path(kind, name)
            if src.is_file():
                shutil.copy2(src, backup / f"{stamp}_{src.name}")

    # ------------------------------------------------------------------------ retrain
    def training_data(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Images and corrected labels of every accepted image."""
        names = self.accepted_names()
        return [self.image(n) for n in names], [self.corrected(n) for n in names]

    def iter_retrain(
        self, *, config: Any = None, evaluate: bool = True
    ) -> Generator[Any, None, RoundRecord]:
        """Fine-tune the initial model on ALL accepted images (online mode); register it.

        Yields the training events of ``cp2_engine.training.iter_train``. Closing the generator
        early cancels the round: no model is registered and the project is unchanged.

        Parameters
        ----------
        config : TrainConfig or dict, optional
            Overrides the project's training settings for this round.
        evaluate : bool
            Compute the new model's AP on held-out images with ground truth.

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
        cfg = config if config is not None else self._meta.get("train_config")
        t0 = time.perf_counter()
        yield from _train_round(
            self.initial_model,
            images,
            labels,
            config=cfg,
            save_path=self.folder / rel,
            folder=self.folder,
            device=self.device,
            metadata={"hitl_round": round_no, "hitl_images": self.accepted_names()},
        )
        seconds = time.perf_counter() - t0
        return self._register_round(round_no, rel, labels, seconds, evaluate=evaluate)

    def retrain(self, *, config: Any = None, evaluate: bool = True) -> RoundRecord:
        """Run :meth:`iter_retrain` to the end and return its record."""
        gen = self.iter_retrain(config=config, evaluate=evaluate)
        return drain(gen)

    def _register_round(
        self, round_no: int, rel: str, labels: list, seconds: float, *, evaluate: bool
    ) -> RoundRecord:
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
        meta = dict(self._meta, current_model=rel, rounds=[*self._meta["rounds"], rel])
        _write_json(self.folder / "project.json", meta)
        self._meta = meta
        if evaluate:
            record = dataclasses.replace(record, ap50=self._heldout_ap50())
        history = [dataclasses.asdict(r) for r in self.history()] + [dataclasses.asdict(record)]
        text = "".join(json.dumps(h) + "\n" for h in history)
        _write_text(self.folder / "history.jsonl", text)
        logger.info("HITL round %d registered: %s", round_no, record)
        return record

    def _heldout_ap50(self) -> float | None:
        """Mean AP@0.5 of the current model on not-yet-accepted images with ground truth."""
        held = [n for n in self.names if not self.is_accepted(n) and self.truth(n) is not None]
        if not held:
            return None
        model = self.load_model()
        scores = [
            _ap50(self.truth(n), model.segment(self.image(n), diameter=self.diameter).masks)
            for n in held
        ]
        return float(np.mean(scores))


def _config_to_dict(config: Any) -> dict | None:
    if config is None:
        return None
    if dataclasses.is_dataclass(config):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(config).items()}
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"train_config must be a TrainConfig, a dict or None, got {type(config)}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


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
        config = TrainConfig(**config)
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
):
    """Fine-tune ``initial_model`` on the accepted images; save to ``save_path``."""
    from cp2_engine.network import save_model
    from cp2_engine.training import iter_train

    cfg = _train_config(config, device)
    local = folder / initial_model
    start = str(local) if local.is_file() else initial_model
    save_path.parent.mkdir(parents=True, exist_ok=True)
    result = yield from iter_train(start, images, labels, config=cfg, save_path=save_path)
    save_model(result.net, save_path, metadata=metadata)
    return result
