"""Find model files by name or path: bundled models, the Cellpose model cache, any file.

Nothing is ever downloaded. Lookup order for ``find_model(name_or_path)``:

1. an existing file path;
2. bundled package data ``cp2_engine/models/<name>`` (a file, or a folder holding ``<name>``);
3. ``$CELLPOSE_LOCAL_MODELS_PATH`` then ``~/.cellpose/models`` (Cellpose's cache), using the
   Cellpose file names (``cyto2`` -> ``cyto2torch_0`` .. ``_3``; ``cyto3`` -> ``cyto3``; any
   other name -> the file of that name).

The home folder and the environment are read at call time, never at import.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["ModelNotFoundError", "ModelSpec", "find_model", "list_models", "search_dirs"]

REPLICATE_NAMES = ("cyto", "cyto2", "nuclei")
"""Cellpose models shipped as 4 replicate files ``<name>torch_0`` .. ``<name>torch_3``."""

_NONCOMMERCIAL = "non-commercial use only (dataset licence)"
_DESCRIPTIONS = {
    "cyto": "Cellpose cytoplasm model (v1)",
    "cyto2": "Cellpose cytoplasm model trained with user data (v2)",
    "cyto3": "Cellpose 3 generalist model",
    "nuclei": "Cellpose nuclei model",
    "CP": "Cellpose zoo: cyto fluorescent",
    "CPx": "Cellpose zoo: other cyto images",
    "TN1": "Cellpose zoo: TissueNet subset 1",
    "TN2": "Cellpose zoo: TissueNet subset 2",
    "TN3": "Cellpose zoo: TissueNet subset 3",
    "LC1": "Cellpose zoo: LiveCell A172 + SKOV3",
    "LC2": "Cellpose zoo: LiveCell various",
    "LC3": "Cellpose zoo: LiveCell BV2 + SkBr3",
    "LC4": "Cellpose zoo: LiveCell SHSY5Y",
    "tissuenet": "Cellpose model trained on TissueNet",
    "livecell": "Cellpose model trained on LiveCell",
    "general": "Cellpose + TissueNet + LiveCell model (styles for model suggestion)",
}
_NONCOMMERCIAL_NAMES = frozenset(
    {"tissuenet", "livecell", "TN1", "TN2", "TN3", "LC1", "LC2", "LC3", "LC4"}
)
_SKIP_SUFFIXES = (".npy", ".json", ".txt", ".md", ".zip", ".tmp")


class ModelNotFoundError(FileNotFoundError):
    """No model file was found for a name; the message lists every place looked."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's files are and what is known about it before loading.

    Attributes
    ----------
    name : str
        Model name (the file name for paths).
    paths : tuple of pathlib.Path
        Weights files; several for replicate models with ``average_replicates=True``.
    size_model : pathlib.Path or None
        The matching ``size_*.npy`` file, if one exists.
    diam_mean : float
        Nominal training diameter (sidecar value, else 17 for nuclei and 30 otherwise); the
        value stored in the weights file wins once it is loaded.
    source : str
        ``"bundled"``, ``"cellpose-cache"`` or ``"path"``.
    description : str
        Human-readable description.
    license : str
        Licence note ("" if none is known).
    """

    name: str
    paths: tuple[Path, ...]
    size_model: Path | None
    diam_mean: float
    source: str
    description: str = ""
    license: str = ""


def bundled_dir() -> Path:
    """Folder of the models shipped inside the package (may be empty or absent).

    Examples
    --------
    >>> bundled_dir().name
    'models'
    """
    return Path(__file__).resolve().parents[1] / "models"


def search_dirs() -> list[tuple[str, Path]]:
    """Return ``(source, folder)`` pairs searched by name, in order, read at call time.

    Examples
    --------
    >>> [source for source, _ in search_dirs()][0]
    'bundled'
    """
    dirs = [("bundled", bundled_dir())]
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    if env:
        dirs.append(("cellpose-cache", Path(env).expanduser()))
    dirs.append(("cellpose-cache", Path.home() / ".cellpose" / "models"))
    return dirs


def _candidates(folder: Path, name: str, source: str, average: bool) -> list[list[Path]]:
    """Candidate file groups for ``name`` in ``folder``; the first existing group wins."""
    if source == "bundled":
        return [[folder / name], [folder / name / name]]
    if name in REPLICATE_NAMES:
        reps = [folder / f"{name}torch_{i}" for i in range(4)]
        return [reps if average else reps[:1]]
    return [[folder / name]]


def _size_model_for(weights: Path) -> Path | None:
    for candidate in (
        weights.with_name(weights.name + "_size.npy"),
        weights.with_name(f"size_{weights.name}.npy"),
    ):
        if candidate.is_file():
            return candidate
    return None


def _display_name(path: Path) -> str:
    stem = path.name
    for base in REPLICATE_NAMES:
        if stem.startswith(f"{base}torch_") and stem[len(base) + 6 :].isdigit():
            return base
    return stem


def _make_spec(name: str, paths: list[Path], source: str) -> ModelSpec:
    from cp2_engine.network._weights import ModelFileError, read_metadata

    try:
        meta = read_metadata(paths[0]) or {}
    except ModelFileError as err:
        logger.warning("ignoring unreadable sidecar: %s", err)
        meta = {}
    default_diam = 17.0 if name.startswith("nuclei") else 30.0
    return ModelSpec(
        name=name,
        paths=tuple(paths),
        size_model=_size_model_for(paths[0]),
        diam_mean=float(meta.get("diam_mean", default_diam)),
        source=source,
        description=str(meta.get("description", _DESCRIPTIONS.get(name, ""))),
        license=str(meta.get("license", _NONCOMMERCIAL if name in _NONCOMMERCIAL_NAMES else "")),
    )


def find_model(name_or_path: str | os.PathLike, *, average_replicates: bool = False) -> ModelSpec:
    """Find a model's weights (and size model) by file path or name, without downloading.

    Parameters
    ----------
    name_or_path : str or path-like
        A weights file path, or a model name such as ``"cyto3"``, ``"cyto2"``, ``"nuclei"``,
        ``"CP"``, ``"TN2"`` or any file name in the searched folders.
    average_replicates : bool, default False
        For cyto/cyto2/nuclei, return all existing replicate files ``<name>torch_0..3``
        instead of only ``<name>torch_0``.

    Returns
    -------
    ModelSpec

    Raises
    ------
    ModelNotFoundError
        If nothing matches; the message lists every path tried.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "my_model"
    >>> _ = p.write_bytes(b"")
    >>> find_model(p).source
    'path'
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a model name or path, got {type(name_or_path).__name__}")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _make_spec(path.name, [path], "path")
    tried = [str(path)]
    name = str(name_or_path)
    if path.name == name and name not in ("", ".", ".."):
        for source, folder in search_dirs():
            for group in _candidates(folder, name, source, average_replicates):
                existing = [p for p in group if p.is_file()]
                if existing and existing[0] == group[0]:
                    return _make_spec(name, existing, source)
                tried.append(str(group[0]))
    raise ModelNotFoundError(
        f"model {name!r} not found (nothing is downloaded); looked for: " + ", ".join(tried)
    )


def _is_model_file(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and not path.name.startswith("size_")
        and not path.name.endswith(_SKIP_SUFFIXES)
    )


def _folder_models(source: str, folder: Path) -> list[ModelSpec]:
    if not folder.is_dir():
        return []
    specs, seen = [], set()
    for entry in sorted(folder.iterdir()):
        if source == "bundled" and entry.is_dir() and (entry / entry.name).is_file():
            entry = entry / entry.name
        if not _is_model_file(entry):
            continue
        name = _display_name(entry)
        if name in seen:
            continue
        seen.add(name)
        paths = [entry]
        if name != entry.name:  # a replicate file: list the group by its first file
            first = folder / f"{name}torch_0"
            if first.is_file():
                paths = [first]
            else:
                name = entry.name
        specs.append(_make_spec(name, paths, source))
    return specs


def list_models() -> list[ModelSpec]:
    """List the models found in the bundled folder and the Cellpose cache folders.

    A name found in several folders is listed once, from the first folder in lookup order.

    Examples
    --------
    >>> all(isinstance(spec, ModelSpec) for spec in list_models())
    True
    """
    specs, seen = [], set()
    for source, folder in search_dirs():
        for spec in _folder_models(source, folder):
            if spec.name not in seen:
                seen.add(spec.name)
                specs.append(spec)
    return specs
