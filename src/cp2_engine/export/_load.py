"""Load a BioImage.IO model package (``.zip``) back into cp2 without running its code.

Only the package's contents are used: ``rdf.yaml`` (read with ``yaml.safe_load``), its
``pytorch_state_dict`` weights (``torch.load(weights_only=True)``, checked strictly against
cp2's own CPnet) and, when present, cp2's size model (plain JSON). The architecture file in the
package is never imported, so a package made by another cp2 install, or by anyone, cannot run
code here. ``bioimageio.core`` is not needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cp2_engine.inference import Model, SizeModel
from cp2_engine.network import ModelFileError, build_net_from_state, load_state_dict

__all__ = ["PackageError", "is_bioimageio_package", "load_bioimageio"]

logger = logging.getLogger(__name__)

_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_SIZE_MODEL = "cp2_size_model.json"


class PackageError(ModelFileError):
    """A file is no BioImage.IO model package cp2 can run (the message says what it holds)."""


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a ``.zip`` file (cp2 reads those as BioImage.IO packages).

    Examples
    --------
    >>> is_bioimageio_package("model.zip"), is_bioimageio_package("cp2_nuclei")
    (True, False)
    """
    return str(path).lower().endswith(".zip")


def _rdf(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    import yaml

    names = set(zf.namelist())
    name = next((n for n in _RDF_NAMES if n in names), None)
    name = name or next((n for n in sorted(names) if n.endswith(".bioimageio.yaml")), None)
    if name is None:
        raise PackageError(
            f"{path} is not a BioImage.IO model package: it has no rdf.yaml "
            f"(it holds {sorted(names)[:8]})"
        )
    try:
        rdf = yaml.safe_load(zf.read(name))
    except yaml.YAMLError as err:
        raise PackageError(f"{path}: {name} is not valid YAML: {err}") from err
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        kind = rdf.get("type") if isinstance(rdf, dict) else type(rdf).__name__
        raise PackageError(f"{path} is a BioImage.IO {kind!r} description, not a model")
    return rdf


def _member(zf: zipfile.ZipFile, entry: Any, path: Path, what: str) -> bytes:
    source = entry.get("source") if isinstance(entry, dict) else None
    name = str(PurePosixPath(str(source))) if source else ""
    if not name or "://" in str(source) or name not in zf.namelist():
        raise PackageError(f"{path}: its {what} file {source!r} is not inside the package")
    data = zf.read(name)
    expected = entry.get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise PackageError(f"{path}: {name} does not match the sha256 in rdf.yaml (corrupt?)")
    return data


def _holds(rdf: dict, state_keys: list[str] | None = None) -> str:
    weights = rdf.get("weights") or {}
    arch = (weights.get("pytorch_state_dict") or {}).get("architecture") or {}
    where = arch.get("source") or arch.get("import_from") or "?"
    text = f"weights {sorted(weights)}; architecture {arch.get('callable', '?')!r} from {where}"
    if state_keys is not None:
        text += f"; {len(state_keys)} tensors, e.g. {state_keys[:3]}"
    return text


def _load_state(data: bytes, rdf: dict, path: Path) -> dict:
    import torch

    with tempfile.TemporaryDirectory(prefix="cp2-package-") as tmp:
        weights = Path(tmp) / "weights.pt"
        weights.write_bytes(data)
        try:
            return load_state_dict(weights)
        except ModelFileError as err:
            try:
                keys = list(torch.load(weights, weights_only=True, map_location="cpu"))
            except Exception:  # torch raises many types on bytes that are no tensors
                keys = None
            raise PackageError(
                f"{path} holds no CPnet (the Cellpose 2/3 network cp2 runs): {_holds(rdf, keys)}"
                f". Details: {str(err).replace(str(weights), 'its state dict')}"
            ) from err


def _size_model(zf: zipfile.ZipFile, rdf: dict) -> SizeModel | None:
    names = [a.get("source") for a in rdf.get("attachments") or [] if isinstance(a, dict)]
    if _SIZE_MODEL not in names or _SIZE_MODEL not in zf.namelist():
        return None
    record = json.loads(zf.read(_SIZE_MODEL))
    return SizeModel(
        A=np.asarray(record["A"], np.float64),
        smean=np.asarray(record["smean"], np.float64),
        ymean=float(record["ymean"]),
        diam_mean=float(record["diam_mean"]),
    )


def load_bioimageio(path: str | os.PathLike, *, device: str = "auto") -> Model:
    """Load a BioImage.IO model package holding a CPnet as a cp2 :class:`Model`.

    Parameters
    ----------
    path : str or path
        The ``.zip`` package (exported by any cp2 install, or another tool).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...

    Returns
    -------
    Model
        Named after the file; with the package's size model when it carries cp2's.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    PackageError
        (a ``ValueError``) not a zip, no ``rdf.yaml``, not a model, no ``pytorch_state_dict``
        weights, or weights that are no CPnet: the message lists what the package holds.

    Examples
    --------
    >>> import tempfile, pathlib, zipfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "other.zip"
    >>> with zipfile.ZipFile(p, "w") as zf:
    ...     zf.writestr("rdf.yaml", "type: model\\nweights: {onnx: {source: m.onnx}}\\n")
    >>> load_bioimageio(p)
    Traceback (most recent call last):
    ...
    cp2_engine.export._load.PackageError: ...no pytorch_state_dict weights...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model package not found: {path}")
    if not zipfile.is_zipfile(path):
        raise PackageError(f"{path} is not a zip file (a BioImage.IO package is a .zip)")
    with zipfile.ZipFile(path) as zf:
        rdf = _rdf(zf, path)
        entry = (rdf.get("weights") or {}).get("pytorch_state_dict")
        if not entry:
            raise PackageError(
                f"{path} has no pytorch_state_dict weights, which cp2 needs to run its own "
                f"CPnet on them: {_holds(rdf)}"
            )
        state = _load_state(_member(zf, entry, path, "pytorch_state_dict"), rdf, path)
        size_model = _size_model(zf, rdf)
    net = build_net_from_state(state)
    logger.info("loaded BioImage.IO package %s (%s)", path, rdf.get("name", "?"))
    return Model(net, size_model=size_model, device=device, name=path.stem)
