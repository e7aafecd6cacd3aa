"""Build a model zoo: styles -> Leiden clusters -> one specialist per cluster -> a generalist.

:func:`iter_build_zoo` is a generator of :class:`BuildEvent` (the training events of each model
are forwarded inside them) that returns the loaded :class:`~cp2_engine.zoo.Zoo`.
It is resumable: a half-built folder continues, keeping the clusters and every finished model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from cp2_engine.util import ProgressEvent, atomic_write_file, drain, relay
from cp2_engine.zoo._build_config import ZooBuildConfig
from cp2_engine.zoo._clustering import cluster_styles, merge_small_clusters
from cp2_engine.zoo._store import (
    Zoo,
    ZooCluster,
    ZooManifest,
    load_zoo,
    save_array,
    save_zoo,
)

log = logging.getLogger(__name__)

__all__ = ["BuildEvent", "balanced_indices", "build_zoo", "iter_build_zoo"]

BUILD_STATE = "build.json"
STYLE_MODEL = "models/style.pth"
GENERALIST = "models/generalist.pth"
SCRATCH_LR = 0.2  # the paper's learning rate from random weights (0.1 when fine-tuning)


@dataclass(frozen=True)
class BuildEvent(ProgressEvent):
    """Progress of a zoo build.

    ``stage`` is one of ``"styles"``, ``"clusters"``, ``"train"`` (``train_event`` holds the
    training engine's event), ``"model_saved"``, ``"skip"`` (model already complete) and
    ``"manifest"``. ``cluster`` is None for the generalist and the zoo-wide stages.
    ``done`` / ``total``: the training steps of the model in the ``"train"`` stage; every other
    stage is one unit (``"styles"``: 0 of 1 when it starts, the others 1 of 1 when over).

    Examples
    --------
    >>> event = BuildEvent("skip", 0, done=1, total=1, message="models/cluster0.pth is done")
    >>> event.fraction, event.tick
    (1.0, False)
    """

    stage: str
    cluster: int | None = None
    train_event: ProgressEvent | None = None

    @property
    def tick(self) -> bool:  # type: ignore[override]
        """A tick when the forwarded training event is one (a step)."""
        return self.train_event is not None and self.train_event.tick


def _event(stage: str, message: str, cluster: int | None = None) -> BuildEvent:
    """The event of a one-unit stage (0 of 1 for ``"styles"``, which starts, else 1 of 1)."""
    return BuildEvent(stage, cluster, done=int(stage != "styles"), total=1, message=message)


def _train_event(message: str, cluster: int | None, event: ProgressEvent) -> BuildEvent:
    """A training event of one model, forwarded with its steps and message."""
    return BuildEvent("train", cluster, event, done=event.done, total=event.total,
                      message=f"{message}: {event.message}")  # fmt: skip


def balanced_indices(labels, *, seed: int = 0) -> np.ndarray:
    """Indices that sample every cluster equally: small clusters are repeated.

    Each cluster contributes as many entries as the largest one (its images cycled in a seeded
    random order), so uniform sampling of the result picks each cluster equally often.

    Examples
    --------
    >>> idx = balanced_indices([0, 0, 0, 0, 1], seed=0)
    >>> np.bincount(np.asarray([0, 0, 0, 0, 1])[idx]).tolist()
    [4, 4]
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    size = np.bincount(labels).max()
    parts = [
        np.resize(rng.permutation(np.flatnonzero(labels == c)), size) for c in np.unique(labels)
    ]
    return np.concatenate(parts)


def _fingerprint(images: Sequence, labels: Sequence) -> str:
    digest = hashlib.sha1()
    for arr in (*images, *labels):
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.shape}{arr.dtype}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _median_diameters(labels: Sequence) -> np.ndarray:
    from cp2_engine.metrics import diameters

    return np.array([diameters(np.asarray(lab))[0] for lab in labels], dtype=np.float64)


def _check_inputs(images: Sequence, labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Validate the data; return the indices of images with cells and all median diameters."""
    if len(images) != len(labels):
        raise ValueError(
            f"expected one label image per image, got {len(images)} and {len(labels)}"
        )
    diams = _median_diameters(labels)
    keep = np.flatnonzero(diams > 0)
    if keep.size < len(images):
        log.warning("%d images have no cells and are left out of the zoo", len(images) - keep.size)
    if keep.size < 2:
        raise ValueError(f"a zoo needs at least 2 images with cells, got {keep.size}")
    return keep, diams


def _resolve_base(base_model, device):
    """Return a CPnet from a name/path, a Model or a CPnet."""
    from cp2_engine.inference import Model
    from cp2_engine.zoo._styles import resolve_net

    if isinstance(base_model, str | Path):
        return Model.load(base_model, device=device).net
    return resolve_net(base_model)


@dataclass(frozen=True)
class _Plan:
    out: Path
    settings: dict
    keep: np.ndarray


def _read_or_start_state(plan: _Plan) -> bool:
    """True when a previous build with the same settings left styles and labels to reuse."""
    path = plan.out / BUILD_STATE
    if not path.is_file():
        return False
    previous = json.loads(path.read_text())
    if previous != plan.settings:
        changed = sorted(k for k in plan.settings if previous.get(k) != plan.settings[k])
        raise ValueError(
            f"{plan.out} holds a zoo built with other settings or data ({', '.join(changed)}); "
            "choose a new output folder"
        )
    return (plan.out / "styles.npy").is_file() and (plan.out / "labels.npy").is_file()


def _write_state(plan: _Plan) -> None:
    text = json.dumps(plan.settings, indent=2, sort_keys=True).encode()
    atomic_write_file(plan.out / BUILD_STATE, lambda f: f.write(text))


def _styles_and_clusters(plan, base_net, images, diams, cfg):
    from cp2_engine.zoo._styles import compute_styles

    if _read_or_start_state(plan):
        yield _event("clusters", "reusing styles and clusters of the previous run")
        return np.load(plan.out / "styles.npy"), np.load(plan.out / "labels.npy")
    yield _event("styles", f"computing styles of {len(plan.keep)} images")
    styles = compute_styles(
        base_net,
        [images[i] for i in plan.keep],
        diameters=diams[plan.keep],
        diam_mean=float(base_net.diam_mean.item()),
        channels=cfg["channels"],
    )
    labels = cluster_styles(
        styles, n_neighbors=cfg["n_neighbors"], resolution=cfg["resolution"], seed=cfg["seed"]
    )
    labels = merge_small_clusters(styles, labels, min_size=cfg["min_cluster_size"])
    plan.out.mkdir(parents=True, exist_ok=True)
    save_array(plan.out / "styles.npy", styles.astype(np.float32))
    save_array(plan.out / "labels.npy", labels)
    _write_state(plan)
    yield _event(
        "clusters", f"{np.unique(labels).size} clusters, sizes {np.bincount(labels).tolist()}"
    )
    return styles, labels


def _initial_net(base_net, *, from_scratch: bool, seed: int):
    import torch

    from cp2_engine.network import CPnet

    if not from_scratch:
        return copy.deepcopy(base_net)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CPnet(
            base_net.nbase, base_net.nout, base_net.sz, diam_mean=float(base_net.diam_mean.item())
        )
    return net.to(next(base_net.parameters()).device)


def _train_one(net, images, labels, *, rel, cluster, plan, cfg):
    """Train ``net`` on the given data and save it to ``plan.out / rel``; yields events.

    It trains in ``models/.unfinished/`` with checkpoints, so a build killed mid-model resumes
    that model where it stopped; the model appears under ``rel`` only when it is finished.
    """
    from cp2_engine.training import (
        TrainConfig,
        discard_unfinished,
        finish_unfinished,
        iter_train_resumable,
    )

    options = {"n_epochs": cfg["epochs"], "seed": cfg["seed"], "channels": tuple(cfg["channels"])}
    if cfg["from_scratch"]:
        options["learning_rate"] = SCRATCH_LR
    config = TrainConfig.from_dict({**options, **cfg["train_overrides"]})
    gen = iter_train_resumable(
        net, list(images), list(labels), config=config, save_path=plan.out / rel
    )
    message = f"training {rel}"
    result = yield from relay(gen, partial(_train_event, message, cluster))
    trained = _result_net(result)
    meta = {"zoo_cluster": cluster, "n_images": len(images)}
    finish_unfinished(plan.out / rel, trained, metadata=meta)
    discard_unfinished(plan.out / rel)
    yield _event("model_saved", f"saved {rel}", cluster)
    return trained


def _finished(plan: _Plan, rel: str) -> bool:
    """Whether ``rel`` is complete: its file exists and no interrupted training is pending."""
    from cp2_engine.training import checkpoint_path, unfinished_path

    path = plan.out / rel
    return path.is_file() and not checkpoint_path(unfinished_path(path)).is_file()


def _result_net(result):
    from cp2_engine.zoo._styles import resolve_net

    for name in ("net", "model"):
        obj = getattr(result, name, None)
        if obj is not None:
            return resolve_net(obj)
    return resolve_net(result)


def _model_entry(plan: _Plan, rel: str, cluster: int, n_images: int) -> ZooCluster:
    from cp2_engine.network import build_net_from_state, load_state_dict

    net = build_net_from_state(load_state_dict(plan.out / rel))
    return ZooCluster(
        id=cluster,
        name=f"cluster{cluster}",
        model=rel,
        diam_mean=float(net.diam_mean.item()),
        diam_labels=float(net.diam_labels.item()),
        n_images=n_images,
    )


def _specialists(plan, base_net, images, labels, clusters, cfg):
    entries = []
    for c in np.unique(clusters).tolist():
        rel = f"models/cluster{c}.pth"
        members = plan.keep[clusters == c]
        yield from _train_model(plan, base_net, images, labels, members, rel=rel, cluster=c,
                                seed=cfg["seed"] + c, cfg=cfg)  # fmt: skip
        entries.append(_model_entry(plan, rel, c, members.size))
    return tuple(entries)


def _generalist(plan, base_net, images, labels, clusters, cfg):
    picks = plan.keep[balanced_indices(clusters, seed=cfg["seed"])]
    yield from _train_model(plan, base_net, images, labels, picks, rel=GENERALIST, cluster=None,
                            seed=cfg["seed"] + 10_000, cfg=cfg)  # fmt: skip


def _train_model(plan, base_net, images, labels, picks, *, rel, cluster, seed, cfg):
    """Train the model ``rel`` on the images ``picks`` from its initial net, unless finished."""
    if _finished(plan, rel):
        yield _event("skip", f"{rel} already trained", cluster)
        return
    net = _initial_net(base_net, from_scratch=cfg["from_scratch"], seed=seed)
    picked = [images[i] for i in picks], [labels[i] for i in picks]
    yield from _train_one(net, *picked, rel=rel, cluster=cluster, plan=plan, cfg=cfg)


def iter_build_zoo(
    images: Sequence,
    labels: Sequence,
    *,
    base_model,
    out,
    config: ZooBuildConfig | None = None,
) -> Generator[BuildEvent, None, Zoo]:
    """Build (or resume) a zoo folder, yielding progress; returns the loaded zoo.

    Steps: styles of every image with cells (from ``base_model``, at each image's median label
    diameter) -> kNN graph + Leiden clusters (clusters smaller than ``config.min_cluster_size``
    are merged into the nearest one, so there are never more clusters than images) -> one
    specialist per cluster trained with :func:`cp2_engine.training.iter_train` (starting from the
    base model, or from random weights with ``config.from_scratch``) -> a generalist trained on
    images sampled equally across clusters -> ``zoo.json``. The base net is saved as the zoo's
    style model, so routing uses the same styles as clustering.

    Parameters
    ----------
    images, labels : sequence of numpy.ndarray
        Training images and their ``(H, W)`` instance labels. Images without cells are left out
        (logged); at least 2 must remain.
    base_model : str, Path, Model or CPnet
        Generalist that computes the styles and, unless ``config.from_scratch``, initialises
        training (a name or path is loaded on ``config.device``).
    out : str or Path
        Zoo folder. An existing folder built with the same settings and data is resumed
        (finished models are kept); other settings raise ``ValueError``.
    config : ZooBuildConfig, optional
        Clustering and training settings; default ``ZooBuildConfig()``.

    Yields
    ------
    BuildEvent

    Returns
    -------
    Zoo

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`ZooBuildConfig`.
    ValueError
        If images and labels differ in number, fewer than 2 images have cells, or ``out``
        holds a zoo built with other settings or data.

    Examples
    --------
    >>> config = ZooBuildConfig(n_neighbors=50, resolution=0.25)
    >>> events = iter_build_zoo(images, labels, base_model="cyto2", out="zoo",
    ...                         config=config)  # doctest: +SKIP
    >>> for event in events:  # doctest: +SKIP
    ...     print(event.stage, event.message)
    """
    config = ZooBuildConfig() if config is None else config
    if not isinstance(config, ZooBuildConfig):
        raise TypeError(f"config must be a ZooBuildConfig, got {type(config).__name__}")
    keep, diams = _check_inputs(images, labels)
    base_net = _resolve_base(base_model, config.device)
    cfg = {
        "n_neighbors": config.n_neighbors,
        "resolution": float(config.resolution),
        "seed": int(config.seed),
        "epochs": config.epochs,
        "from_scratch": bool(config.from_scratch),
        "channels": list(config.channels),
        "min_cluster_size": config.min_cluster_size,
        "train_overrides": dict(config.train_overrides),
    }
    settings = {
        **cfg,
        "data": _fingerprint(images, labels),
        "base_model": str(base_model)
        if isinstance(base_model, str | Path)
        else type(base_model).__name__,
    }
    plan = _Plan(Path(out), settings, keep)
    styles, clusters = yield from _styles_and_clusters(plan, base_net, images, diams, cfg)
    _save_style_model(plan, base_net)
    entries = yield from _specialists(plan, base_net, images, labels, clusters, cfg)
    if config.train_generalist:
        yield from _generalist(plan, base_net, images, labels, clusters, cfg)
    manifest = ZooManifest(
        clusters=entries,
        generalist=GENERALIST if config.train_generalist else None,
        style_model=STYLE_MODEL,
        base_model=settings["base_model"],
        n_neighbors=cfg["n_neighbors"],
        resolution=cfg["resolution"],
        seed=cfg["seed"],
        diam_mean=float(base_net.diam_mean.item()),
        extra={
            "epochs": cfg["epochs"],
            "from_scratch": cfg["from_scratch"],
            "channels": cfg["channels"],
            "n_images_without_cells": len(images) - keep.size,
        },
    )
    save_zoo(plan.out, manifest, styles=styles, labels=clusters)
    yield _event("manifest", f"zoo written to {plan.out}")
    return load_zoo(plan.out)


def _save_style_model(plan: _Plan, base_net) -> None:
    from cp2_engine.network import save_model

    (plan.out / "models").mkdir(parents=True, exist_ok=True)
    if not (plan.out / STYLE_MODEL).is_file():
        save_model(base_net, plan.out / STYLE_MODEL, metadata={"zoo_role": "style"})


def build_zoo(
    images: Sequence, labels: Sequence, *, base_model, out, config: ZooBuildConfig | None = None
) -> Zoo:
    """Run :func:`iter_build_zoo` to the end (logging each stage) and return the zoo.

    Examples
    --------
    >>> build_zoo(images, labels, base_model="cyto2", out="zoo",
    ...           config=ZooBuildConfig(epochs=100))  # doctest: +SKIP
    """

    def log_stage(event: BuildEvent) -> None:
        if event.stage != "train":
            log.info("%s", event.message)

    gen = iter_build_zoo(images, labels, base_model=base_model, out=out, config=config)
    return drain(gen, on_event=log_stage)
