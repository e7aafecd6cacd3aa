"""Model files: strict loading of CPnet weight files and atomic saving with a JSON sidecar.

A model file is a plain ``torch.save(net.state_dict())``, loadable by Cellpose unchanged. cp2
writes ``<path>.json`` beside it with the diameters, the architecture, the creator's metadata,
the cp2 version, the creation time and the sha256 of the weights file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from cp2_engine.network._net import CPnet
from cp2_engine.util import atomic_write_file

logger = logging.getLogger(__name__)

__all__ = [
    "ModelFileError",
    "build_net_from_state",
    "load_state_dict",
    "read_metadata",
    "save_model",
    "sha256_file",
    "verify_sha256",
]

SIDECAR_FORMAT = "cp2-model/1"
_OPTIONAL_KEYS = ("diam_mean", "diam_labels")
_RESERVED = frozenset(
    {"format", "cp2_version", "created", "sha256", "diam_mean", "diam_labels", "nbase", "nout"}
)
_FIRST_CONV = "downsample.down.res_down_0.conv.conv_0.2.weight"
_HEAD_CONV = "output.2.weight"


class ModelFileError(ValueError):
    """A file is not a usable CPnet model file (corrupt, wrong layout, or another model kind)."""


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex sha256 digest of a file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "empty"
    >>> _ = p.write_bytes(b"")
    >>> sha256_file(p)[:12]
    'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise ModelFileError(
            f"{path} is not a torch weights file: it cannot be read as tensors only "
            "(expected a state_dict saved with torch.save)"
        ) from err
    except Exception as err:  # torch raises many types (zip, EOF, IndexError...) on bad bytes
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelFileError(
            f"{path} is not a readable torch weights file (truncated or corrupt?): {first_line}"
        ) from err


def _is_sam_file(state: Mapping[str, Any]) -> bool:
    return "W2" in state or any(str(k).startswith("encoder.") for k in state)


def infer_architecture(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Infer ``nbase``, ``nout`` and ``sz`` of a CPnet from its state_dict shapes.

    Examples
    --------
    >>> infer_architecture(CPnet(nout=3).state_dict())
    {'nbase': (2, 32, 64, 128, 256), 'nout': 3, 'sz': 3}
    """
    needed = [_FIRST_CONV, _HEAD_CONV]
    absent = [k for k in needed if k not in state]
    if absent:
        raise ModelFileError(f"not a CPnet state_dict: missing keys {absent}")
    convs = [_HEAD_CONV]
    while (key := f"downsample.down.res_down_{len(convs) - 1}.conv.conv_0.2.weight") in state:
        convs.append(key)
    odd = [f"{k}: {tuple(state[k].shape)}" for k in convs
           if state[k].ndim != 4 or min(state[k].shape) < 1]  # fmt: skip
    if odd:
        raise ModelFileError(
            f"not a CPnet state_dict: convolution weights must be 4-D with sizes >= 1, got {odd}"
        )
    first = state[_FIRST_CONV]
    nbase = [int(first.shape[1])] + [int(state[k].shape[0]) for k in convs[1:]]
    return {"nbase": tuple(nbase), "nout": int(state[_HEAD_CONV].shape[0]), "sz": first.shape[-1]}


def _expected_shapes(arch: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = CPnet(arch["nbase"], arch["nout"], arch["sz"])
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _check_keys(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    try:
        arch = infer_architecture(state)
        expected = _expected_shapes(arch)
    except ValueError as err:  # ModelFileError, or a CPnet that cannot be built
        raise ModelFileError(f"{path} is not a usable CPnet model file: {err}") from err
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs expected {shape}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    fatal_missing = [k for k in missing if k not in _OPTIONAL_KEYS]
    if fatal_missing or unexpected or wrong:
        raise ModelFileError(
            f"{path} does not match a CPnet with nbase={arch['nbase']}, nout={arch['nout']}: "
            f"missing keys {fatal_missing}; unexpected keys {unexpected}; "
            f"shape mismatches {wrong}"
        )
    if missing:
        logger.warning("%s has no %s (Cellpose-1 era file); using 30.0", path, missing)
        state = dict(state)
        diam_mean = state.get("diam_mean", torch.full((1,), 30.0))
        state.setdefault("diam_mean", diam_mean)
        state.setdefault("diam_labels", diam_mean.clone())
    return state


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load and strictly check a CPnet weights file (cp2 or Cellpose 2/3).

    Parameters
    ----------
    path : str or path-like
        The weights file (``torch.save`` of a state_dict).

    Returns
    -------
    dict
        The state_dict on the CPU. ``diam_mean``/``diam_labels``, if absent (Cellpose-1 era
        files), are filled with 30.0 and a warning is logged.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        If the file is not a torch file, is a Cellpose-4 (SAM) model, or its keys/shapes do
        not match a CPnet (the message lists missing and unexpected keys).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m"
    >>> save_model(CPnet(), p)
    >>> len(load_state_dict(p))
    313
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    state = _torch_load(path)
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelFileError(f"{path} does not hold a state_dict (a mapping of name -> tensor)")
    if _is_sam_file(state):
        raise ModelFileError(
            f"{path} is a Cellpose-4 (Cellpose-SAM) model; cp2 runs only the Cellpose 2/3 "
            "CPnet architecture. Use a cyto/cyto2/cyto3/nuclei-style model instead."
        )
    return _check_keys(dict(state), path)


def build_net_from_state(state: Mapping[str, torch.Tensor]) -> CPnet:
    """Build a :class:`CPnet` of the right shape for ``state`` and load it strictly.

    Examples
    --------
    >>> net = build_net_from_state(CPnet(nout=4).state_dict())
    >>> net.nout
    4
    """
    arch = infer_architecture(state)
    net = CPnet(arch["nbase"], arch["nout"], arch["sz"])
    net.load_state_dict(state, strict=True)
    return net


def _cp2_version() -> str:
    from cp2_engine import __version__

    return __version__


def _sidecar_record(net: CPnet, digest: str, metadata: Mapping[str, Any] | None) -> dict:
    clash = sorted(_RESERVED.intersection(metadata or {}))
    if clash:
        raise ValueError(f"metadata must not set the reserved sidecar keys {clash}")
    record = {
        "format": SIDECAR_FORMAT,
        "cp2_version": _cp2_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sha256": digest,
        "diam_mean": float(net.diam_mean.item()),
        "diam_labels": float(net.diam_labels.item()),
        "nbase": list(net.nbase),
        "nout": net.nout,
    }
    record.update(metadata or {})
    return record


def save_model(
    net: CPnet, path: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None
) -> None:
    """Save ``net``'s weights to ``path`` (Cellpose-loadable) plus a ``<path>.json`` sidecar.

    Both files are written atomically (temp file in the same folder, then ``os.replace``). The
    new sidecar is written first under a temporary name (``.<name>.json.pending``) and moved onto
    ``<path>.json`` after the weights, so a crash between the two is repaired by the next
    :func:`read_metadata` (the pending sidecar is used only if its sha256 is the weights file's).

    Parameters
    ----------
    net : CPnet
        The network to save.
    path : str or path-like
        Weights file to write; its folder must exist.
    metadata : mapping, optional
        JSON-serialisable extras stored at the top level of the sidecar, for example
        ``{"channels": [0, 0], "training": {"n_epochs": 100}}``. The keys format, cp2_version,
        created, sha256, diam_mean, diam_labels, nbase and nout are reserved.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "mymodel"
    >>> save_model(CPnet(), p, metadata={"channels": [0, 0]})
    >>> read_metadata(p)["channels"], verify_sha256(p)
    ([0, 0], True)
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder for the model file does not exist: {path.parent}")
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    record = _sidecar_record(net, "", metadata)
    try:
        json.dumps(record)
    except TypeError as err:
        raise TypeError(f"metadata must be JSON-serialisable: {err}") from err
    pending = _pending(path)

    def write_weights(fh) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        record["sha256"] = hashlib.sha256(data).hexdigest()
        text = json.dumps(record, indent=2).encode("utf-8")
        atomic_write_file(pending, lambda f: f.write(text))
        fh.write(data)

    try:
        atomic_write_file(path, write_weights)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    _move_sidecar(pending, _sidecar(path))
    logger.info("saved model %s (sha256 %s)", path, record["sha256"][:12])


def _pending(path: Path) -> Path:
    """The sidecar of a save in progress: complete, written before the weights are replaced."""
    return path.with_name(f".{path.name}.json.pending")


def _move_sidecar(pending: Path, sidecar: Path) -> None:
    try:
        os.replace(pending, sidecar)
    except FileNotFoundError:  # a reader already moved it (read_metadata's repair)
        if not sidecar.is_file():
            raise


def _repair_sidecar(path: Path) -> None:
    """Finish a save killed between the weights and the sidecar (see :func:`save_model`).

    A pending sidecar whose sha256 is the weights file's belongs to these weights: it replaces
    the stale (or missing) sidecar. One that does not match is from a save killed before the
    weights were replaced: the sidecar in place is still right and the pending one is ignored.
    """
    pending = _pending(path)
    try:
        record = json.loads(pending.read_text(encoding="utf-8"))
        if not path.is_file() or record.get("sha256") != sha256_file(path):
            return
        _move_sidecar(pending, _sidecar(path))
        logger.warning("%s: finished an interrupted save (its sidecar was stale)", path)
    except (OSError, ValueError, AttributeError) as err:
        logger.debug("pending sidecar of %s not used: %s", path, err)


def read_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """Return the sidecar metadata of model file ``path``, or None if it has no sidecar.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> read_metadata(pathlib.Path(tempfile.mkdtemp()) / "cyto2torch_0") is None
    True
    """
    path = Path(path)
    if _pending(path).is_file():
        _repair_sidecar(path)
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"sidecar {sidecar} is not valid JSON: {err}") from err
    if not isinstance(record, dict):
        raise ModelFileError(f"sidecar {sidecar} must hold a JSON object")
    return record


def verify_sha256(path: str | os.PathLike) -> bool:
    """Check model file ``path`` against the sha256 recorded in its sidecar.

    Returns
    -------
    bool
        True if the digest matches, False if there is no sidecar or it records no digest.

    Raises
    ------
    ModelFileError
        If the file's digest differs from the recorded one (corrupt or modified file).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m"
    >>> save_model(CPnet(), p)
    >>> verify_sha256(p)
    True
    """
    record = read_metadata(path)
    if not record or not record.get("sha256"):
        return False
    actual = sha256_file(path)
    if actual != record["sha256"]:
        raise ModelFileError(
            f"{path} has sha256 {actual}, but its sidecar records {record['sha256']}: "
            "the file was modified or is corrupt"
        )
    return True
