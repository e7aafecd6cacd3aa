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
import io
import os
import pickle
import pickletools
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


_MAX_ITEMS = 2**40


class _DtypeStub:
    """Stands in for ``numpy.dtype`` while unpickling: the dtype is rebuilt from a checked type
    code and byte order; numpy's own ``dtype.__setstate__`` is never called with file data."""

    def __init__(self, code, align=False, copy=True):
        if not isinstance(code, str) or code[:1] in ("M", "m"):
            raise pickle.UnpicklingError(f"dtype {code!r} is not allowed")
        self.dtype = np.dtype(code)

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) >= 8 and state[1] in ("<", ">", "|", "=")):
            raise pickle.UnpicklingError("malformed dtype state")
        if any(item is not None for item in state[2:5]):
            raise pickle.UnpicklingError("structured dtypes are not allowed")
        if state[5] not in (-1, self.dtype.itemsize):
            raise pickle.UnpicklingError("dtype size does not match its type code")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


def _dtype(value) -> np.dtype:
    if isinstance(value, _DtypeStub):
        return value.dtype
    raise pickle.UnpicklingError(f"expected a dtype, got {type(value).__name__}")


def _shape(value) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(n, int) and n >= 0 for n in value):
        raise pickle.UnpicklingError(f"malformed array shape {value!r}")
    if int(np.prod(value, dtype=np.float64)) > _MAX_ITEMS:
        raise pickle.UnpicklingError(f"array shape {value} is too large")
    return value


def _from_bytes(raw, dtype: np.dtype, shape, order: str) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"dtype {dtype} cannot come from raw bytes")
    if isinstance(raw, pickle.PickleBuffer):
        with raw.raw() as view:
            raw = bytes(view)
    elif isinstance(raw, bytes | bytearray):
        raw = bytes(raw)
    else:
        raise pickle.UnpicklingError("array data must be bytes")
    if len(raw) != n * dtype.itemsize:
        raise pickle.UnpicklingError("array data does not match its shape and dtype")
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order=order).copy()


class _ArrayStub:
    """Stands in for an ndarray while unpickling; its state is checked (shape, dtype, data
    length) and the array is built from it with ``np.frombuffer``, never by numpy's own
    ``ndarray.__setstate__``, which can crash the process on a corrupt file."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("malformed array state")
        _, shape, dtype, fortran, raw = state
        shape, dtype = _shape(shape), _dtype(dtype)
        order = "F" if fortran else "C"
        if dtype != np.dtype(object):
            self.array = _from_bytes(raw, dtype, shape, order)
            return
        n = int(np.prod(shape, dtype=np.int64))
        if not isinstance(raw, list) or len(raw) != n:
            raise pickle.UnpicklingError("object array data does not match its shape")
        flat = np.empty(n, dtype=object)
        for i, item in enumerate(raw):
            flat[i] = item
        self.array = flat.reshape(shape, order=order)


def _reconstruct(cls, shape, typecode):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays are allowed")
    return _ArrayStub()


def _scalar(dtype, data):
    dtype = _dtype(dtype)
    if dtype == np.dtype(object):
        return data
    return _from_bytes(data, dtype, (), "C")[()]


def _frombuffer(buf, dtype, shape, order):
    return _from_bytes(buf, _dtype(dtype), _shape(tuple(shape)), "F" if order == "F" else "C")


def _unstub(obj, depth: int = 0):
    """Replace every stub in the loaded structure by the real array (or dtype)."""
    if depth > 100:
        raise pickle.UnpicklingError("nesting too deep")
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise pickle.UnpicklingError("an array without data")
        obj = obj.array
    if isinstance(obj, _DtypeStub):
        return obj.dtype
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        for index in np.ndindex(obj.shape):
            obj[index] = _unstub(obj[index], depth + 1)
        return obj
    if isinstance(obj, dict):
        return {_unstub(k, depth + 1): _unstub(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return type(obj)(_unstub(v, depth + 1) for v in obj)
    return obj


def _allowed_globals() -> dict:
    reconstruct, scalar, frombuffer = _reconstruct, _scalar, _frombuffer
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _DtypeStub,
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


#: Opcodes a numpy/Cellpose pickle never uses: out-of-band buffers (whose clean-up on a corrupt
#: stream upsets CPython: "deallocated bytearray object has exported buffers"), persistent ids,
#: the extension registry and the old class-instantiating opcodes.
_FORBIDDEN_OPCODES = frozenset(
    {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER", "PERSID", "BINPERSID", "EXT1", "EXT2",
     "EXT4", "INST", "OBJ"}
)  # fmt: skip


def _check_opcodes(data: bytes) -> None:
    """Walk the pickle's opcodes (nothing is executed) and refuse the ones data never needs."""
    try:
        for opcode, _arg, _pos in pickletools.genops(data):
            if opcode.name in _FORBIDDEN_OPCODES:
                raise UnsafeFileError(f"pickle opcode {opcode.name}")
    except UnsafeFileError:
        raise
    except Exception as err:  # genops raises ValueError and others on a corrupt stream
        raise pickle.UnpicklingError(f"corrupt pickle ({err})") from err


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
            data = fh.read()
            _check_opcodes(data)
            arr = _unstub(_RestrictedUnpickler(io.BytesIO(data), encoding="ASCII").load())
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
