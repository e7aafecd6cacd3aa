"""A model zoo on disk: one folder with a manifest, the training styles and the models.

Layout::

    ZOO/zoo.json            manifest (see ZooManifest)
    ZOO/styles.npy          (N, 256) float32 training styles
    ZOO/labels.npy          (N,) int64 cluster of each training image
    ZOO/models/<name>.pth   one specialist per cluster, plus the generalist

Every file is written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cp2_engine.util import atomic_write_file

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "ZOO_VERSION",
    "Zoo",
    "ZooCluster",
    "ZooManifest",
    "load_zoo",
    "save_array",
    "save_zoo",
]

ZOO_VERSION = 1
MANIFEST_NAME = "zoo.json"


@dataclass(frozen=True)
class ZooCluster:
    """One cluster of the zoo and its specialist model.

    ``model`` is a path relative to the zoo folder.
    """

    id: int
    name: str
    model: str
    diam_mean: float
    diam_labels: float
    n_images: int


@dataclass(frozen=True)
class ZooManifest:
    """Everything about a zoo except its arrays; stored as ``zoo.json``.

    ``generalist`` and ``style_model`` are model paths relative to the folder (or None):
    ``style_model`` is the net whose styles the router was fitted on (the build's base model).
    ``base_model`` names where that base came from (informational).
    """

    clusters: tuple[ZooCluster, ...]
    generalist: str | None = None
    style_model: str | None = None
    base_model: str | None = None
    n_neighbors: int = 100
    resolution: float = 0.45
    seed: int = 0
    diam_mean: float = 30.0
    version: int = ZOO_VERSION
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        """The manifest as indented JSON text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> ZooManifest:
        """Build a manifest from parsed JSON, checking its version and cluster ids."""
        version = data.get("version")
        if version != ZOO_VERSION:
            raise ValueError(f"expected zoo manifest version {ZOO_VERSION}, got {version!r}")
        try:
            clusters = tuple(ZooCluster(**c) for c in data["clusters"])
            return cls(**{**data, "clusters": clusters})
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed zoo manifest: {err}") from err

    def cluster(self, cluster_id: int) -> ZooCluster:
        """The entry of ``cluster_id`` (KeyError if absent)."""
        for c in self.clusters:
            if c.id == cluster_id:
                return c
        raise KeyError(f"zoo has no cluster {cluster_id}")


@dataclass(frozen=True, eq=False)
class Zoo:
    """A loaded zoo folder: manifest, training styles and labels."""

    folder: Path
    manifest: ZooManifest
    styles: np.ndarray
    labels: np.ndarray

    def model_path(self, cluster_id: int | None) -> Path:
        """Absolute path of a cluster's model, or of the generalist for ``None``."""
        if cluster_id is None:
            if self.manifest.generalist is None:
                raise ValueError(f"zoo {self.folder} has no generalist model")
            return self.folder / self.manifest.generalist
        return self.folder / self.manifest.cluster(cluster_id).model


def save_array(path, arr: np.ndarray) -> Path:
    """Save one array as ``.npy`` atomically (no pickles)."""
    return atomic_write_file(path, lambda f: np.save(f, np.asarray(arr), allow_pickle=False))


def save_zoo(folder, manifest: ZooManifest, *, styles, labels) -> Path:
    """Write a zoo folder's manifest, styles and labels (the models are written by training).

    Parameters
    ----------
    folder : str or Path
        The zoo folder (created if missing).
    manifest : ZooManifest
        The manifest.
    styles : array_like
        ``(N, D)`` training styles.
    labels : array_like
        ``(N,)`` cluster ids.

    Returns
    -------
    Path
        The manifest path.

    Examples
    --------
    >>> import tempfile
    >>> m = ZooManifest(clusters=())
    >>> save_zoo(tempfile.mkdtemp(), m, styles=np.eye(2), labels=[0, 1]).name
    'zoo.json'
    """
    folder = Path(folder)
    styles = np.asarray(styles, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    _check_arrays(styles, labels, folder)
    save_array(folder / "styles.npy", styles)
    save_array(folder / "labels.npy", labels)
    text = manifest.to_json().encode()
    return atomic_write_file(folder / MANIFEST_NAME, lambda f: f.write(text))


def _check_arrays(styles: np.ndarray, labels: np.ndarray, folder: Path) -> None:
    if styles.ndim != 2 or labels.shape != (styles.shape[0],):
        raise ValueError(
            f"zoo {folder}: expected styles (N, D) and labels (N,), "
            f"got {styles.shape} and {labels.shape}"
        )


def load_zoo(folder, *, check_models: bool = True) -> Zoo:
    """Load and validate a zoo folder.

    Parameters
    ----------
    folder : str or Path
        Folder holding ``zoo.json``, ``styles.npy`` and ``labels.npy``.
    check_models : bool
        Check that every model file named in the manifest exists.

    Returns
    -------
    Zoo

    Raises
    ------
    FileNotFoundError
        If the folder, the manifest, an array or a model file is missing (the message names
        the missing file).
    ValueError
        If the manifest is malformed or disagrees with the arrays.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = save_zoo(d, ZooManifest(clusters=()), styles=np.eye(2), labels=[0, 1])
    >>> load_zoo(d).styles.shape
    (2, 2)
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"not a zoo folder: {manifest_path} does not exist")
    try:
        data = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_path} is not valid JSON: {err}") from err
    manifest = ZooManifest.from_dict(data)
    styles = _load_array(folder / "styles.npy")
    labels = _load_array(folder / "labels.npy")
    _check_arrays(styles, labels, folder)
    _check_clusters(manifest, labels, folder)
    if check_models:
        _check_model_files(manifest, folder)
    return Zoo(folder, manifest, styles, labels)


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"zoo file missing: {path}")
    return np.load(path, allow_pickle=False)


def _check_clusters(manifest: ZooManifest, labels: np.ndarray, folder: Path) -> None:
    known = {c.id for c in manifest.clusters}
    missing = sorted(set(np.unique(labels).tolist()) - known)
    if missing and known:
        raise ValueError(f"zoo {folder}: labels.npy has clusters {missing} absent from zoo.json")


def _check_model_files(manifest: ZooManifest, folder: Path) -> None:
    paths = [c.model for c in manifest.clusters]
    paths += [p for p in (manifest.generalist, manifest.style_model) if p is not None]
    for rel in paths:
        if not (folder / rel).is_file():
            raise FileNotFoundError(f"zoo {folder}: model file missing: {folder / rel}")
