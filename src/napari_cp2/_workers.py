"""Background jobs: the only module that imports ``napari.qt.threading``.

Every long engine call (loading a model, segmenting, recomputing masks, retraining) runs as a
generator inside a :class:`Task`. A task runs the generator in a napari ``thread_worker``, or
synchronously in the calling thread when threads are switched off, either with
``threaded=False`` or with the environment variable ``CP2_NAPARI_NOTHREADS=1`` (tests, scripts).

A task never lets an exception escape to napari's traceback dialog: engine errors are caught at
the worker boundary and handed to the ``on_error`` callback, which the widgets turn into a
notification.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NOTHREADS_ENV", "Task", "threads_enabled"]

logger = logging.getLogger(__name__)

NOTHREADS_ENV = "CP2_NAPARI_NOTHREADS"


def threads_enabled(threaded: bool | None = None) -> bool:
    """Return whether tasks run in a worker thread.

    Parameters
    ----------
    threaded : bool, optional
        Explicit choice; None reads ``CP2_NAPARI_NOTHREADS`` (``1``/``true``/``yes`` = no threads).

    Examples
    --------
    >>> threads_enabled(False)
    False
    """
    if threaded is not None:
        return bool(threaded)
    return os.environ.get(NOTHREADS_ENV, "").strip().lower() not in {"1", "true", "yes"}


@dataclass(frozen=True)
class _Outcome:
    """What a guarded generator returns: a value, or the exception that stopped it."""

    value: Any = None
    error: BaseException | None = None


def _guarded(gen: Generator) -> Generator:
    """Run ``gen`` and return an :class:`_Outcome` instead of raising."""
    try:
        value = yield from gen
    except Exception as exc:  # the worker boundary: every engine error becomes a notification
        logger.debug("cp2 task failed", exc_info=True)
        return _Outcome(error=exc)
    return _Outcome(value=value)


def _noop(*_args) -> None:
    return None


class Task:
    """One background job built from a generator.

    Parameters
    ----------
    gen : generator
        The work; it yields progress items and returns the result.
    name : str
        Job name used in messages ("segmentation", "retraining", ...).
    on_yield, on_done, on_error, on_cancel : callable, optional
        Called in the GUI thread with a progress item, the result, the exception, or nothing.
    threaded : bool, optional
        Run in a worker thread (default: unless ``CP2_NAPARI_NOTHREADS`` is set).

    Examples
    --------
    >>> def job():
    ...     yield 1
    ...     return 42
    >>> out = []
    >>> Task(job(), name="demo", on_done=out.append, threaded=False).start()
    >>> out
    [42]
    """

    def __init__(
        self,
        gen: Generator,
        *,
        name: str,
        on_yield: Callable[[Any], None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_cancel: Callable[[], None] | None = None,
        threaded: bool | None = None,
    ) -> None:
        self.name = name
        self._gen = _guarded(gen)
        self._on_yield = on_yield or _noop
        self._on_done = on_done or _noop
        self._on_error = on_error or _noop
        self._on_cancel = on_cancel or _noop
        self._threaded = threads_enabled(threaded)
        self.worker = None
        self.running = False
        self.cancelled = False
        self.detached = False
        #: ``time.perf_counter()`` when the result (or error/cancel) reached the GUI thread.
        self.finished_at: float | None = None

    def start(self) -> Task:
        """Start the job (returns self; in synchronous mode, returns when it is over)."""
        self.running = True
        if self._threaded:
            self._start_thread()
        else:
            self._run_here()
        return self

    def cancel(self, *, quiet: bool = False) -> bool:
        """Ask the job to stop at its next yield; return False when there was nothing to stop.

        ``quiet=True`` also detaches the callbacks (the widgets may be gone, e.g. the viewer
        closed), so nothing touches the GUI afterwards.
        """
        if quiet:
            self.detached = True
        if not self.running or self.cancelled:
            return False
        self.cancelled = True
        if self.worker is not None:
            self.worker.quit()
        return True

    def _run_here(self) -> None:
        try:
            while True:
                if self.cancelled:
                    self._gen.close()
                    self._finish_cancelled()
                    return
                item = next(self._gen)
                self._emit(self._on_yield, item)
        except StopIteration as stop:
            self._finish(stop.value)

    def _start_thread(self) -> None:
        from napari.qt.threading import create_worker

        from cp2_engine.inference import tune_allocator

        tune_allocator()  # before the thread exists: it then shares the main malloc heap
        worker = create_worker(lambda: (yield from self._gen), _start_thread=False)
        worker.yielded.connect(lambda item: self._emit(self._on_yield, item))
        worker.returned.connect(self._finish)
        worker.aborted.connect(self._finish_cancelled)
        worker.finished.connect(self._gen.close)
        self.worker = worker
        worker.start()

    def _emit(self, callback: Callable, *args) -> None:
        if not self.detached:
            callback(*args)

    def _finish(self, outcome: Any) -> None:
        self.finished_at = time.perf_counter()
        self.running = False
        if self.cancelled:
            self._finish_cancelled()
        elif isinstance(outcome, _Outcome) and outcome.error is not None:
            self._emit(self._on_error, outcome.error)
        elif isinstance(outcome, _Outcome):
            self._emit(self._on_done, outcome.value)

    def _finish_cancelled(self) -> None:
        if self.running or self.cancelled:
            self.running = False
            self._emit(self._on_cancel)
            self.cancelled = True
            self._on_cancel = _noop


# --------------------------------------------------------------------------- engine jobs
# Every call into the cp2 engine's heavy parts (models, segmentation, training, projects) goes
# through the functions below, so widgets stay thin and these stay testable without a viewer.

PROJECT_PREFIX = "project: "


def model_choices() -> list[tuple[str, str]]:
    """(label, key) of every model the registry finds: bundled, user folders, Cellpose cache.

    Examples
    --------
    >>> all(isinstance(key, str) for _, key in model_choices())
    True
    """
    from cp2_engine.network import list_models

    return [(f"{spec.name} ({spec.source})", spec.name) for spec in list_models()]


ZOO_PREFIX = "zoo:"


def model_label(key: str) -> str:
    """How a model key is shown: zoos as "auto (zoo: <folder name>)", others as they are."""
    if key.startswith(ZOO_PREFIX):
        return f"auto (zoo: {Path(key[len(ZOO_PREFIX) :]).name})"
    return key


def model_key_for_path(path) -> str:
    """The model key of a chosen file: a zoo's ``zoo.json`` (or folder) selects the zoo router."""
    path = Path(path)
    if path.name == "zoo.json" or (path.is_dir() and (path / "zoo.json").is_file()):
        return ZOO_PREFIX + str(path.parent if path.name == "zoo.json" else path)
    return str(path)


def check_zoo(folder) -> str:
    """Validate the zoo in ``folder`` (every model file present) and return its model key."""
    from cp2_engine.zoo import load_zoo

    key = model_key_for_path(folder)
    if not key.startswith(ZOO_PREFIX):
        raise ValueError(f"{folder} is not a cp2 model zoo (expected a folder with zoo.json)")
    load_zoo(key[len(ZOO_PREFIX) :])
    return key


def project_model_choices(project) -> list[tuple[str, str]]:
    """(label, path) of the models trained in ``project``, newest last."""
    if project is None:
        return []
    rounds = project._meta.get("rounds", []) if hasattr(project, "_meta") else []
    return [(PROJECT_PREFIX + rel, str(project.folder / rel)) for rel in rounds]


def get_model(cache: dict, key: str):
    """Load the model ``key`` (name or path) once and keep it in ``cache``."""
    if key not in cache:
        from cp2_engine.inference import Model

        from ._tooltips import message

        try:
            cache[key] = Model.load(key)
        except Exception as err:  # torch.load raises many types for a file that is no model
            raise ValueError(message("model_failed", model=key, error=err)) from err
    return cache[key]


def segment_job(cache: dict, key: str, eimg, *, diameter: float, **settings) -> Generator:
    """Load the model (cached) and segment ``eimg`` (an :class:`EngineImage`).

    Yields progress strings; returns ``(key, Segmentation)``.
    """
    yield f"loading model {key}"
    model = get_model(cache, key)
    yield "segmenting"
    seg = model.segment(
        eimg.image,
        diameter=diameter or None,
        channels=eimg.channels,
        channel_axis=eimg.channel_axis,
        **settings,
    )
    return key, seg


def recompute_job(cache: dict, key: str, seg, **thresholds) -> Generator:
    """Recompute masks from cached flows with new thresholds; returns the new Segmentation."""
    yield "recomputing masks"
    return get_model(cache, key).recompute_masks(seg, **thresholds)


def estimate_job(cache: dict, key: str, eimg) -> Generator:
    """Estimate the cell diameter of ``eimg`` with the model's size model; returns a float."""
    yield "estimating diameter"
    model = get_model(cache, key)
    return float(
        model.estimate_diameter(eimg.image, channels=eimg.channels, channel_axis=eimg.channel_axis)
    )


def open_project(folder, *, images: dict | None = None, initial_model: str = "cyto2"):
    """Open the HITL project in ``folder``, or create it from ``images`` {name: array}."""
    from cp2_engine.hitl import HitlProject

    folder = Path(folder)
    if (folder / "project.json").is_file():
        return HitlProject.open(folder)
    if not images:
        raise ValueError(
            f"{folder} holds no project; open 2-D images in the viewer to create one from them"
        )
    return HitlProject.create(
        folder, images=list(images.values()), names=list(images), initial_model=initial_model
    )


def store_prediction(project, name: str, masks: np.ndarray, *, model: str) -> None:
    """Record ``masks`` as the project's prediction of ``name`` (the base of its accounting)."""
    project.set_prediction(name, masks, model=model)


def preload_training() -> None:
    """Load the lazily imported parts of the training stack on the calling (main) thread, so the
    retraining worker never holds the GIL for imports while the event loop waits."""
    from cp2_engine.training import preload

    preload()


def accept_labels(
    project, name: str, labels: np.ndarray, *, prediction=None, model=None, overwrite=True
):
    """Hand corrected labels (and the prediction they were corrected from) to the project.

    Returns the project's ROI accounting.
    """
    return project.accept(
        name, labels, overwrite=overwrite, prediction=prediction, prediction_model=model
    )


def retrain_job(project, config) -> Generator:
    """Fine-tune the project's initial model on all accepted images; returns the RoundRecord."""
    record = yield from project.iter_retrain(config=config, evaluate=False)
    return record


def evaluate_job(truth: np.ndarray, pred: np.ndarray, *, thresholds) -> Generator:
    """AP table, AP-vs-IoU curve and FP/FN masks of ``pred`` against ``truth``.

    Returns a dict: ``thresholds``, ``ap``, ``tp``, ``fp``, ``fn`` (at ``thresholds``),
    ``curve`` ((ious, ap) on 0.5..0.95), ``fp_mask`` and ``fn_mask`` (labels of the unmatched
    predicted / true ROIs at IoU 0.5).
    """
    from cp2_engine.metrics import average_precision, match_masks

    yield "computing AP"
    table = average_precision(truth, pred, thresholds=tuple(thresholds))
    grid = np.round(np.arange(0.5, 1.0, 0.05), 2)
    curve = average_precision(truth, pred, thresholds=tuple(grid)).ap[0]
    match = match_masks(truth, pred, threshold=0.5)
    pairs = np.asarray(match.pairs).reshape(-1, 2)
    fn_mask = np.where(np.isin(truth, pairs[:, 0], invert=True), truth, 0)
    fp_mask = np.where(np.isin(pred, pairs[:, 1], invert=True), pred, 0)
    return {
        "thresholds": np.asarray(table.thresholds),
        "ap": table.ap[0],
        "tp": table.tp[0],
        "fp": table.fp[0],
        "fn": table.fn[0],
        "curve": (grid, curve),
        "fp_mask": fp_mask,
        "fn_mask": fn_mask,
    }
