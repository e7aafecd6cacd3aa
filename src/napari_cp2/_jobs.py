"""Thin adapters from the widgets to the engine: model keys, and each long engine call as a
generator that a :class:`~napari_cp2._workers.Task` runs (threads live in ``_workers.py``).

Nothing here is engine logic: models load through :func:`cp2_engine.segmenters.load_segmenter`,
projects through :class:`cp2_engine.hitl.HitlProject`, scores through :mod:`cp2_engine.metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path

import numpy as np

from ._workers import Task

__all__ = [
    "Task",
    "accept_labels",
    "evaluate_job",
    "model_choices",
    "open_project",
    "retrain_job",
    "segment_job",
    "suggest_job",
]

logger = logging.getLogger(__name__)

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


def model_label(key: str) -> str:
    """How a model key is shown: zoos as "auto (zoo: <folder name>)", others as they are.

    Examples
    --------
    >>> model_label("zoo:/data/myzoo"), model_label("cp2_cyto")
    ('auto (zoo: myzoo)', 'cp2_cyto')
    """
    from cp2_engine.segmenters import ZOO_PREFIX, is_zoo_key

    if is_zoo_key(key):
        return f"auto (zoo: {Path(key[len(ZOO_PREFIX) :]).name})"
    return key


def model_key_for_path(path) -> str:
    """The model key of a chosen file: a zoo's ``zoo.json`` (or folder) selects the zoo router."""
    from cp2_engine.segmenters import zoo_key

    return zoo_key(path) or str(path)


def check_zoo(folder) -> str:
    """Validate the zoo in ``folder`` (every model file present) and return its model key."""
    from cp2_engine.segmenters import zoo_key
    from cp2_engine.zoo import load_zoo

    key = zoo_key(folder)
    if key is None:
        raise ValueError(f"{folder} is not a cp2 model zoo (expected a folder with zoo.json)")
    load_zoo(folder if Path(folder).is_dir() else Path(folder).parent)
    return key


def project_model_choices(project) -> list[tuple[str, str]]:
    """(label, path) of the models trained in ``project``, newest last."""
    if project is None:
        return []
    return [(PROJECT_PREFIX + rel, str(project.folder / rel)) for rel in project.rounds]


def all_model_choices(ws) -> list[tuple[str, str]]:
    """(label, key) of the registry's models, the open project's rounds (newest last) and the
    models added in this session (e.g. a finished retraining)."""
    try:
        choices = model_choices()
    except (ImportError, OSError, ValueError) as err:
        logger.warning("cp2: model registry unavailable: %s", err)
        choices = []
    choices += project_model_choices(ws.project)
    known = dict(choices)
    return choices + [(model_label(k), k) for k in ws.extra_models if k not in known]


def batch_job(cache: dict, key: str, images, **options) -> Generator:
    """Load the model (cached) and run :func:`cp2_engine.batch.iter_segment_batch` on
    ``images`` (paths, folders or ``(name, array)`` pairs); returns its ``BatchResult``."""
    from cp2_engine.batch import iter_segment_batch

    yield f"loading model {key}"
    model = get_model(cache, key)
    result = yield from iter_segment_batch(images, model=key, segmenter=model, **options)
    return result


def get_model(cache: dict, key: str):
    """Load the segmenter ``key`` (name, path or zoo) once and keep it in ``cache``."""
    if key not in cache:
        from cp2_engine.segmenters import load_segmenter

        from ._tooltips import message

        try:
            cache[key] = load_segmenter(key)
        except Exception as err:  # torch.load raises many types for a file that is no model
            raise ValueError(message("model_failed", model=key, error=err)) from err
    return cache[key]


def segment_job(cache: dict, key: str, eimg, *, diameter: float, **settings) -> Generator:
    """Load the model (cached) and segment ``eimg`` (an :class:`EngineImage`).

    Yields progress strings, then (a z-stack, when the segmenter has ``iter_segment``) the
    engine's ``PlaneProgress`` events; returns ``(key, Segmentation)``.
    """
    yield f"loading model {key}"
    model = get_model(cache, key)
    yield f"segmenting a z-stack of {eimg.image.shape[0]} planes" if eimg.stack else "segmenting"
    options = {
        "diameter": diameter or None,
        "channels": eimg.channels,
        "channel_axis": eimg.channel_axis,
        **settings,
    }
    if not hasattr(model, "iter_segment"):  # e.g. a zoo router: no progress events
        return key, model.segment(eimg.image, **options)
    seg = yield from model.iter_segment(eimg.image, **options)
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


def open_project(folder, *, images: dict | None = None, initial_model: str | None = None):
    """Open the HITL project in ``folder``, or create it from ``images`` {name: array}
    (``initial_model`` None: the engine's default, ``cp2_engine.hitl.DEFAULT_INITIAL_MODEL``)."""
    from cp2_engine.hitl import HitlProject

    return HitlProject.open_or_create(folder, images=images, initial_model=initial_model)


def store_prediction(project, name: str, masks: np.ndarray, *, model: str) -> None:
    """Record ``masks`` as the project's prediction of ``name`` (the base of its accounting)."""
    project.set_prediction(name, masks, model=model)


def preload_training() -> None:
    """Load the lazily imported parts of the training stack on the calling (main) thread, so the
    retraining worker never holds the GIL for imports while the event loop waits."""
    from cp2_engine.training import preload

    preload()


def accept_labels(
    project, name: str, labels: np.ndarray, *, prediction=None, model=None, overwrite=True,
    assisted=None,
):  # fmt: skip
    """Hand corrected labels (and the prediction they were corrected from, and the labels of
    the ROIs drawn with a click) to the project.

    Returns the project's ROI accounting.
    """
    return project.accept(
        name, labels, overwrite=overwrite, prediction=prediction, prediction_model=model,
        assisted=assisted,
    )  # fmt: skip


def retrain_job(project, config) -> Generator:
    """Fine-tune the project's initial model on all accepted images; returns the RoundRecord."""
    record = yield from project.iter_retrain(config=config, evaluate=False)
    return record


def suggest_job(project) -> Generator:
    """Rank the project's unaccepted images by the current model's uncertainty (read-only).

    Yields ``RankProgress`` events; returns the ranking (a list of ``ImageScore``, most
    uncertain first; empty when every image is accepted).
    """
    ranking = yield from project.iter_rank_next()
    return ranking


def evaluate_job(truth: np.ndarray, pred: np.ndarray, *, thresholds) -> Generator:
    """AP table, AP-vs-IoU curve and FP/FN masks of ``pred`` against ``truth``.

    Returns a dict: ``thresholds``, ``ap``, ``tp``, ``fp``, ``fn`` (at ``thresholds``),
    ``curve`` ((ious, ap) on 0.5..0.95), ``fp_mask`` and ``fn_mask`` (labels of the unmatched
    predicted / true ROIs at IoU 0.5).
    """
    from cp2_engine.metrics import average_precision, unmatched_masks

    yield "computing AP"
    table = average_precision(truth, pred, thresholds=tuple(thresholds))
    grid = np.round(np.arange(0.5, 1.0, 0.05), 2)
    curve = average_precision(truth, pred, thresholds=tuple(grid)).ap[0]
    fn_mask, fp_mask = unmatched_masks(truth, pred, threshold=0.5)
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
