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
Writing operations hold ``project.lock``: a second process gets a clear error (see ``_lock.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from cp2_engine.hitl._accounting import RoiAccounting, account_rois, check_labels
from cp2_engine.hitl._active import ActiveMixin
from cp2_engine.hitl._cost import CostMixin
from cp2_engine.hitl._lock import WriterLockMixin, project_lock, writes
from cp2_engine.hitl._project_files import (
    _check_initial_model,
    _check_names,
    _config_to_dict,
    _labels_dtype,
    _now,
    _unique_names,
    _write_json,
    _write_tif,
)
from cp2_engine.hitl._rounds import RetrainMixin, RoundRecord, _load_model
from cp2_engine.hitl._stacks import load_inputs, spatial_shape_of, stack_segment_kwargs
from cp2_engine.io import imread

logger = logging.getLogger(__name__)

__all__ = ["SCHEMA_VERSION", "HitlProject", "ProjectStatus"]

#: Version of the ``project.json`` layout.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ProjectStatus:
    """Where a project stands (see :meth:`HitlProject.status`)."""

    n_images: int
    n_accepted: int
    n_rounds: int
    current_model: str
    next_image: str | None
    n_drawn_total: int


class HitlProject(WriterLockMixin, RetrainMixin, ActiveMixin, CostMixin):
    """A human-in-the-loop project folder (see the module docstring for the layout).

    Create one with :meth:`create`, reopen it with :meth:`open`. The loop is
    ``name = project.next_image()`` → ``project.predict(name)`` → the human corrects →
    ``project.accept(name, labels)`` → ``project.retrain()`` → next image.
    ``next_image("active")`` picks the image the model is least sure of (``_active.py``).

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
        initial_model: str | None = None,
        train_config: Any = None,
        ground_truth: Sequence[Any] | None = None,
        names: Sequence[str] | None = None,
        diameter: float | None = None,
        device: str = "auto",
        stacks: bool = False,
    ) -> HitlProject:
        """Create a new project in ``folder`` (which must not hold a project yet).

        Parameters
        ----------
        folder : path
            Project folder; created if missing.
        images : sequence of paths or arrays
            The images to annotate, in order. Paths keep their file stem as the image name.
        initial_model : str, optional
            Model every round fine-tunes: a name or path for ``Model.load``, ``"scratch"`` (random
            weights) or None (the bundled ``cp2_cyto``); refused when cp2 cannot find it.
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
        stacks : bool
            The images are z-stacks ``(Z, Y, X)`` / ``(Z, Y, X, C)`` with ``(Z, Y, X)`` labels;
            see ``_stacks.py`` (3-D predictions, training on planes; train_config's anisotropy).

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
        folder, initial_model = Path(folder), _check_initial_model(initial_model)
        if isinstance(images, np.ndarray | str | os.PathLike):
            raise TypeError("images must be a list of images (paths or arrays), not one image")
        if len(images) == 0:
            raise ValueError("images must hold at least one image (path or array)")
        loaded, truths = load_inputs(images, ground_truth, stacks=stacks)
        names = list(names) if names is not None else _unique_names([n for _, n in loaded])
        _check_names(names, len(loaded))
        folder.mkdir(parents=True, exist_ok=True)
        with project_lock(folder):
            if (folder / "project.json").exists():
                raise FileExistsError(f"{folder} already holds a project; use HitlProject.open")
            for sub in ("images", "predictions", "corrected", "models"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            for (arr, _), name in zip(loaded, names):
                _write_tif(folder / "images" / f"{name}.tif", arr)
            for truth, name in zip(truths, names):
                if truth is not None:
                    _write_tif(folder / "truth" / f"{name}_masks.tif", _labels_dtype(truth))
            shapes = [{"name": n, "shape": list(a.shape)} | ({"stack": True} if stacks else {})
                      for (a, _), n in zip(loaded, names)]  # fmt: skip
            meta = {
                "schema_version": SCHEMA_VERSION,
                "created": _now(),
                "images": shapes,
                "initial_model": str(initial_model),
                "train_config": _config_to_dict(train_config),
                "diameter": diameter,
                "current_model": str(initial_model),
                "rounds": [],
            }
            _write_json(folder / "project.json", meta)
        logger.info("created HITL project %s with %d images", folder, len(names))
        return cls(folder, meta, device=device)

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

    @classmethod
    def open_or_create(
        cls, folder, *, images: dict | None = None, initial_model=None, device="auto"
    ) -> HitlProject:
        """Open the project in ``folder``, or create it there from ``images`` ({name: image});
        ValueError when there is neither a project nor images (``initial_model``: see create).

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> folder = Path(tempfile.mkdtemp()) / "p"
        >>> p = HitlProject.open_or_create(folder, images={"a": np.ones((8, 8))})
        >>> HitlProject.open_or_create(folder).names
        ['a']
        """
        folder = Path(folder)
        if (folder / "project.json").is_file():
            return cls.open(folder, device=device)
        if not images:
            raise ValueError(f"{folder} holds no project; give 2-D images to create one from")
        ims, names = list(images.values()), list(images)
        return cls.create(
            folder, images=ims, names=names, initial_model=initial_model, device=device
        )

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

    @property
    def rounds(self) -> list[str]:
        """Models of the retraining rounds so far, oldest first, relative to :attr:`folder`.

        A copy: changing it does not change the project.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> p = HitlProject.create(Path(tempfile.mkdtemp()), images=[np.ones((8, 8))],
        ...                        initial_model="scratch")
        >>> p.rounds
        []
        """
        return list(self._meta["rounds"])

    def _check_name(self, name: str) -> None:
        if name not in self.names:
            raise ValueError(f"unknown image name {name!r}; the project has {self.names}")

    def _path(self, kind: str, name: str) -> Path:
        rel = {"image": f"images/{name}.tif", "truth": f"truth/{name}_masks.tif",
               "pred": f"predictions/{name}_pred.tif", "masks": f"corrected/{name}_masks.tif",
               "prov": f"corrected/{name}_provenance.json"}[kind]  # fmt: skip
        return self.folder / rel

    def _spatial(self, name: str) -> tuple[int, ...]:
        return spatial_shape_of(self._meta["images"][self.names.index(name)])

    def image(self, name: str) -> np.ndarray:
        """The stored image ``name``."""
        self._check_name(name)
        return imread(self._path("image", name))

    def _read(self, kind: str, name: str) -> np.ndarray | None:
        self._check_name(name)
        path = self._path(kind, name)
        return imread(path) if path.is_file() else None

    def truth(self, name: str) -> np.ndarray | None:
        """The ground truth of ``name``, or None when the project has none for it."""
        return self._read("truth", name)

    def prediction(self, name: str) -> np.ndarray | None:
        """The latest stored prediction of ``name``, or None."""
        return self._read("pred", name)

    def corrected(self, name: str) -> np.ndarray | None:
        """The accepted labels of ``name``, or None when not accepted yet."""
        return self._read("masks", name)

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
        return ProjectStatus(n_images=len(self.names), n_accepted=len(accepted),
                             n_rounds=len(self.rounds), current_model=self.current_model,
                             next_image=self.next_image(), n_drawn_total=drawn)  # fmt: skip

    # ------------------------------------------------------------------ predict / accept
    iter_retrain = writes(RetrainMixin.iter_retrain)  # the lock is held for the whole round

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
        entry = self._meta["images"][self.names.index(name)]
        kwargs = stack_segment_kwargs(entry, self._meta.get("train_config"), segment_kwargs)
        seg = model.segment(self.image(name), **kwargs)
        self.set_prediction(name, seg.masks, model=self.current_model)
        return seg

    @writes
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

    @writes
    def accept(
        self,
        name: str,
        corrected_labels: np.ndarray,
        *,
        overwrite: bool = False,
        prediction: np.ndarray | None = None,
        prediction_model: str | None = None,
        assisted=None,
    ) -> RoiAccounting:
        """Store the human's corrected labels of ``name`` and their ROI accounting.

        Parameters
        ----------
        name : str
            An image of the project.
        corrected_labels : ndarray of int, shape (H, W), or (Z, Y, X) for a stack
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
        assisted : sequence of int, optional
            Labels of ROIs drawn with one click (a proposal from the model's flows): the
            accounting counts them as ``n_assisted``.

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
            msg = "pass overwrite=True to replace it (old labels go to corrected/backup/)"
            raise FileExistsError(f"{name!r} is already accepted; {msg}")
        if prediction is not None:
            stored = self.prediction(name)
            if stored is None or not np.array_equal(stored, prediction):
                self.set_prediction(name, prediction, model=prediction_model)
        if self.is_accepted(name):
            self._backup(name)
        acc = self._account(name, labels)
        if assisted is not None:
            acc = acc.with_assisted(assisted)
        pred_meta = self.folder / "predictions" / f"{name}_pred.json"
        model = json.loads(pred_meta.read_text())["model"] if pred_meta.is_file() else None
        record = {
            "image": name,
            "created": _now(),
            "pred_model": model,
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
