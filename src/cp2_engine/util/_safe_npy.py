"""Safe reading of ``.npy`` files that hold pickled Python objects (Cellpose ``_seg.npy``,
``size_*.npy``).

``np.load(..., allow_pickle=True)`` runs whatever the pickle asks for, so a shared file can
execute code when opened. :func:`load_npy_restricted` reads the ``.npy`` header itself and
unpickles object arrays with an unpickler that resolves only plain containers, numbers, strings
and what numpy's own array/dtype/scalar pickling needs; any other global is refused before it
is looked up, with an :class:`UnsafeFileError` naming the file.
"""

from __future__ import annotations

import builtins
import codecs
import os
import pickle
from pathlib import Path

import numpy as np

__all__ = ["UnsafeFileError", "load_npy_restricted"]


class UnsafeFileError(ValueError):
    """A file asks to run code (a pickled global outside the allowed types) and was refused."""


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (latin-1 text codecs only)."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return codecs.encode(text, encoding, errors)


def _allowed_globals() -> dict:
    reconstruct = np.empty(0).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.arange(3).__reduce_ex__(5)[0]
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "OrderedDict"): dict,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = frombuffer
    for name in ("set", "frozenset", "complex"):
        allowed[("builtins", name)] = getattr(builtins, name)
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise UnsafeFileError(f"persistent id {pid!r}")


def _read_header(fh) -> np.dtype:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)[2]
    return np.lib.format.read_array_header_2_0(fh)[2]


def load_npy_restricted(path: str | os.PathLike, *, what: str = ".npy file") -> np.ndarray:
    """Read a ``.npy`` file; object arrays are unpickled with a restricted unpickler.

    Allowed in the pickle: dict, list, tuple, set, str, bytes, numbers, bool, None, numpy
    arrays, dtypes and scalars. Anything else (a class, a function such as ``os.system``) is
    refused before it is resolved, so nothing in the file runs.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npy`` file.
    what : str, optional
        How to call the file in error messages (``"_seg.npy file"``, ``"size model"``).

    Returns
    -------
    numpy.ndarray
        The stored array (a 0-d object array for a pickled dict; use ``.item()``).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    UnsafeFileError
        (a ValueError) If the pickle asks for a type or function outside the allowed set.
    ValueError
        If the file is not a readable ``.npy`` file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "d.npy"
    >>> np.save(p, {"a": np.arange(3), "b": [1.5, "x", None]}, allow_pickle=True)
    >>> load_npy_restricted(p).item()["b"]
    [1.5, 'x', None]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, "rb") as fh:
        try:
            dtype = _read_header(fh)
        except Exception as err:  # numpy's header parser raises ValueError, SyntaxError, ...
            raise ValueError(f"{path} is not a readable {what}: bad .npy header ({err})") from err
        try:
            if not dtype.hasobject:
                fh.seek(0)
                return np.load(fh, allow_pickle=False)
            arr = _RestrictedUnpickler(fh, encoding="ASCII").load()
        except UnsafeFileError as err:
            raise UnsafeFileError(
                f"refused to open {what} {path}: it asks to load {err}, which a data file never "
                "needs (it could run code); only open files from sources you trust"
            ) from None
        except Exception as err:  # a corrupt pickle raises many types (EOF, Overflow, Index...)
            raise ValueError(f"{path} is not a readable {what}: {err}") from err
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path} is not a readable {what}: it holds {type(arr).__name__}")
    return arr
