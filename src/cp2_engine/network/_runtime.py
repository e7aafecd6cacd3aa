"""The network runtime: one place that decides how a CPnet forward runs (backend, precision).

Every inference path of cp2 (``Model.segment``, 3-D planes, large-image tasks, the zoo's style
pass, HITL predictions) sends its batches of tiles through :func:`get_runner`. The runner is
cached per network, so a folder, a napari viewer or a dask worker pays the start-up once.

Backends
--------
``"torch"``
    Eager PyTorch (channels-last on the CPU), under :func:`~cp2_engine.network.autocast_for`.
    Always available: the exact path and the fallback of every other backend.
``"openvino"``
    Intel OpenVINO's CPU runtime (``pip install openvino``), compiled once per network from its
    ONNX export (``docs/benchmarks.md`` has the side-by-side measurement that chose it). The
    converted model is cached on disk (``$CP2_CACHE_DIR``, default ``~/.cache/cp2``) by the
    sha256 of the weights, so a second process skips the export.
``"auto"``
    OpenVINO on a CPU with native bfloat16 where it imports, otherwise torch. On a CPU without
    native bfloat16 OpenVINO's fp32 gain measured 1.1-1.3x over channels-last torch, less
    than its per-process start-up on a few images (``docs/runtime.md``): ask for it there with
    ``backend="openvino"``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np
import torch

from cp2_engine.network._device import (
    autocast_for,
    cpu_has_native_bf16,
    resolve_device,
    resolve_precision,
)
from cp2_engine.util import tune_allocator

__all__ = [
    "BACKENDS",
    "NetRunner",
    "get_runner",
    "openvino_available",
    "resolve_backend",
]

logger = logging.getLogger(__name__)

#: The backends a user may ask for.
BACKENDS = ("auto", "torch", "openvino")
#: Bump when the cached converted model's layout changes.
_CACHE_FORMAT = "cp2-ov-1"
_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_RUNNERS_LOCK = threading.Lock()


def openvino_available() -> bool:
    """True when the OpenVINO runtime imports (``CP2_NO_OPENVINO=1`` makes it False).

    Examples
    --------
    >>> isinstance(openvino_available(), bool)
    True
    """
    if os.environ.get("CP2_NO_OPENVINO"):
        return False
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _openvino_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve_backend(backend: str | None, device, precision: str) -> str:
    """The backend that runs a network: ``"torch"`` or ``"openvino"``.

    Parameters
    ----------
    backend : {"auto", "torch", "openvino"} or None
        ``"auto"`` (or None) takes OpenVINO on a CPU with native bfloat16 where it imports,
        else torch; the environment variable ``CP2_BACKEND``
        (``"torch"`` or ``"openvino"``) replaces that choice.
    device : torch.device or str
        Where the network runs (OpenVINO runs on the CPU only).
    precision : str
        A resolved precision (``"fp32"``, ``"bf16"``, ``"fp16"``).

    Raises
    ------
    ValueError
        An unknown backend, or ``"openvino"`` where it cannot run.

    Examples
    --------
    >>> resolve_backend("torch", "cpu", "fp32")
    'torch'
    >>> resolve_backend("auto", "cpu", "fp32") in ("torch", "openvino")
    True
    """
    if backend is None:
        backend = "auto"
    if backend == "auto":
        backend = os.environ.get("CP2_BACKEND", "auto") or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    kind = torch.device(device).type
    if backend == "torch":
        return "torch"
    usable = kind == "cpu" and openvino_available()
    if usable and precision == "bf16":
        usable = _openvino_bf16()
    if backend == "auto":
        usable = usable and cpu_has_native_bf16()
    if backend == "openvino" and not usable:
        raise ValueError(
            f"backend 'openvino' cannot run {precision} on {kind!r} here (it needs the "
            "openvino package, the CPU, and for bf16 a CPU with native bfloat16); "
            "use backend='torch' or 'auto'"
        )
    return "openvino" if usable else "torch"


def _weights_key(net: torch.nn.Module) -> tuple:
    """Changes whenever a weight is replaced or modified in place (training, loading)."""
    return tuple((t.data_ptr(), t._version) for t in net.state_dict().values())


class NetRunner:
    """Runs batches of tiles through one network with a fixed backend and precision.

    Get one with :func:`get_runner` (cached per network). The runner holds its network weakly
    (so that a cached runner never keeps a network alive): keep a reference to the network
    while you use it. Calling it with a
    ``(B, nchan, H, W)`` float32 tensor (H, W multiples of 8) returns float32 ``(B, nout, H, W)``
    outputs and ``(B, nstyle)`` styles, like ``CPnet.forward`` without autograd.

    Attributes
    ----------
    backend : str
        ``"torch"`` or ``"openvino"``.
    precision : str
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    device : torch.device
        Where the outputs are returned.
    """

    def __init__(self, net, *, device, precision: str, backend: str, channels_last: bool):
        self.device = torch.device(device)
        self.precision = precision
        self.backend = backend
        self.channels_last = bool(channels_last)
        self._net = weakref.ref(net)
        self._lock = threading.Lock()
        self._compiled = None
        self._key = _weights_key(net) if backend == "openvino" else None

    def __repr__(self) -> str:
        return f"NetRunner(backend={self.backend!r}, precision={self.precision!r})"

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self._net()
        if net is None:
            raise RuntimeError(
                "the network of this runner no longer exists (a runner holds its network "
                "weakly: keep a reference to the network while you use the runner)"
            )
        if self.backend == "openvino":
            with self._lock:
                return self._run_openvino(net, x)
        return _run_torch(net, x, self.precision, self.channels_last)

    def _run_openvino(self, net, x: torch.Tensor):
        if self._compiled is None:
            self._compiled = _compile_openvino(net, self.precision)
        out = self._compiled(x.detach().cpu().numpy())
        y, style = (torch.from_numpy(np.asarray(out[i])) for i in range(2))
        return y.to(self.device), style.to(self.device)


def _run_torch(net, x: torch.Tensor, precision: str, channels_last: bool):
    if channels_last:
        kernel = next((p for p in net.parameters() if p.ndim == 4), None)
        if kernel is not None and not kernel.is_contiguous(memory_format=torch.channels_last):
            net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast_for(precision, x.device):
        y, style = net(x)
    return y.float().contiguous(), style.float().contiguous()


def cache_dir() -> Path:
    """Folder of cp2's on-disk caches: ``$CP2_CACHE_DIR``, else ``~/.cache/cp2``."""
    env = os.environ.get("CP2_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "cp2"
    return base.expanduser()


def _state_digest(net) -> str:
    h = hashlib.sha256(_CACHE_FORMAT.encode())
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def _export_onnx(net, path: Path) -> None:
    """ONNX export of a float32 copy of ``net`` (the original is left as it is)."""
    import copy

    clone = copy.deepcopy(net).float().cpu().eval()
    clone = clone.to(memory_format=torch.contiguous_format)
    x = torch.zeros(1, clone.nchan, 64, 64)
    with warnings_silenced():
        torch.onnx.export(
            clone, (x,), str(path), input_names=["x"], output_names=["y", "style"],
            dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}}, opset_version=17, dynamo=False,
        )  # fmt: skip


@contextlib.contextmanager
def warnings_silenced():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _openvino_model(net):
    """The converted OpenVINO model of ``net``: from the disk cache, else exported and cached."""
    import openvino as ov

    folder = cache_dir() / "openvino"
    xml = folder / f"{_state_digest(net)}-{ov.__version__.split('-')[0]}.xml"
    core = ov.Core()
    if xml.exists() and xml.with_suffix(".bin").exists():
        try:
            return core.read_model(str(xml))
        except RuntimeError as err:  # a damaged cache entry: rebuild it
            logger.warning("rebuilding the OpenVINO cache entry %s (%s)", xml.name, err)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        onnx_path = Path(tmp) / "net.onnx"
        _export_onnx(net, onnx_path)
        model = core.read_model(str(onnx_path))
        staged = Path(tmp) / xml.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(staged, xml)
    logger.info("OpenVINO model converted and cached in %s", xml)
    return model


def _compile_openvino(net, precision: str):
    import openvino as ov

    model = _openvino_model(net)
    config = {
        "INFERENCE_NUM_THREADS": max(1, torch.get_num_threads()),
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = ov.Core().compile_model(model, "CPU", config)
    logger.info("OpenVINO network compiled (%s)", precision)
    return compiled


def get_runner(
    net,
    *,
    device=None,
    precision: str | None = "auto",
    backend: str | None = "auto",
    channels_last: bool | None = None,
) -> NetRunner:
    """The runner of ``net`` for a precision and backend (cached; rebuilt when weights change).

    Parameters
    ----------
    net : CPnet
        The network, in eval mode.
    device : torch.device or str, optional
        Default: the device of the net's parameters.
    precision : {"auto", "fp32", "bf16", "fp16"} or None
        See :func:`~cp2_engine.network.resolve_precision`.
    backend : {"auto", "torch", "openvino"} or None
        See :func:`resolve_backend`.
    channels_last : bool or None
        For the torch backend: channels-last memory format (None: on the CPU).

    Returns
    -------
    NetRunner

    Examples
    --------
    >>> from cp2_engine.network._net import CPnet
    >>> net = CPnet().eval()
    >>> runner = get_runner(net, precision="fp32", backend="torch")
    >>> y, style = runner(torch.zeros(2, 2, 32, 32))
    >>> tuple(y.shape), runner is get_runner(net, precision="fp32", backend="torch")
    ((2, 3, 32, 32), True)
    """
    dev = resolve_device(device) if device is not None else next(net.parameters()).device
    prec = resolve_precision(precision, dev)
    kind = resolve_backend(backend, dev, prec)
    last = dev.type == "cpu" if channels_last is None else bool(channels_last)
    if dev.type == "cpu":
        tune_allocator()
    key = (str(dev), prec, kind, last)
    with _RUNNERS_LOCK:
        runners = _RUNNERS.setdefault(net, {})
        runner = runners.get(key)
        if runner is None or (kind == "openvino" and runner._key != _weights_key(net)):
            runner = NetRunner(net, device=dev, precision=prec, backend=kind, channels_last=last)
            runners[key] = runner
    return runner
