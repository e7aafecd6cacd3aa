"""Resolve a torch device from a user-facing spec ("auto", "cpu", "cuda", "cuda:1", "mps")."""

from __future__ import annotations

import contextlib
import functools
import logging
import os

import torch

logger = logging.getLogger(__name__)

_VALID = ("auto", "cpu", "cuda", "mps")
#: The precisions a user may ask for; "auto" picks by device (:func:`resolve_precision`).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``spec``.

    Parameters
    ----------
    spec : str, torch.device or None
        ``"auto"`` (or None) picks CUDA, then Apple MPS, then the CPU. Any other value is passed
        to :class:`torch.device` after checking that the backend is available.

    Returns
    -------
    torch.device

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(spec, torch.device):
        return spec
    if spec is None or spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(spec, str) or spec.split(":")[0] not in _VALID:
        raise ValueError(f"device must be one of {_VALID} (optionally 'cuda:N'), got {spec!r}")
    kind = spec.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was requested but torch sees no Apple MPS device")
    return torch.device(spec)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 or AMX).

    Without these instructions oneDNN emulates bfloat16, which is slower than float32, so cp2
    only turns on bfloat16 autocast by default where this is True. Cached: training asks at
    every step.

    Examples
    --------
    >>> isinstance(cpu_has_native_bf16(), bool)
    True
    """
    probes = [getattr(torch.cpu, name, None) for name in _BF16_PROBES]
    if all(probe is not None for probe in probes):
        return any(probe() for probe in probes)
    try:  # an older torch without the probes: read the CPU flags (Linux)
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_channels_last(
    choice: bool | None, device: torch.device, *, training: bool = False
) -> bool:
    """Whether to run the network channels-last: ``choice``, or cp2's measured rule when None.

    Inference on a CPU: channels-last (oneDNN's fastest convolutions on x86; forward 1.14x on a
    2-core AVX2 EPYC). Training on a CPU: channels-last only where the CPU has AVX-512 (a step
    was ~8 % faster with it there); with AVX2 only, the backward pass is faster in torch's
    default layout (a batch-8 224-px fp32 step 5.4 s vs 6.3 s channels-last, same run). On GPUs
    cp2 leaves the layout to torch.

    Examples
    --------
    >>> use_channels_last(None, torch.device("cpu")), use_channels_last(False, torch.device("cpu"))
    (True, False)
    >>> use_channels_last(None, torch.device("cuda"), training=True)
    False
    """
    if choice is not None:
        return bool(choice)
    if device.type != "cpu":
        return False
    return not training or torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_precision(precision: str | None = "auto", device: torch.device | str = "cpu") -> str:
    """The one precision policy of cp2 (inference and training): "fp32", "bf16" or "fp16".

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16", "fp16"} or None
        ``"auto"`` (or None) picks the fast precision the hardware computes natively:
        bfloat16 on a CPU with AVX-512 BF16 or AMX (:func:`cpu_has_native_bf16`), bfloat16 on a
        CUDA GPU that supports it and float16 on an older one, float32 elsewhere (CPUs without
        native bfloat16, Apple MPS); the environment variable ``CP2_PRECISION`` (one of the
        other values) replaces that choice. ``"fp32"`` is the exact path (the network's own
        precision); ``"bf16"`` / ``"fp16"`` force a reduced precision (``"fp16"`` on CUDA only;
        ``"bf16"`` on a CPU without native support runs emulated, slower than fp32).
    device : torch.device or str
        Where the network runs.

    Returns
    -------
    str
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises
    ------
    ValueError
        For an unknown precision, or ``"fp16"`` off CUDA.

    Examples
    --------
    >>> resolve_precision("fp32", "cpu")
    'fp32'
    >>> resolve_precision("auto", "cpu") in ("bf16", "fp32")  # bf16 where the CPU has it
    True
    """
    if precision is None:
        precision = "auto"
    if precision == "auto":
        precision = os.environ.get("CP2_PRECISION", "auto") or "auto"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    kind = torch.device(device).type
    if precision == "fp16" and kind != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device; {kind!r} runs 'fp32' or 'bf16'")
    if precision != "auto":
        if precision == "bf16" and kind == "cpu" and not cpu_has_native_bf16():
            logger.warning("this CPU has no native bfloat16: 'bf16' runs emulated (slower)")
        return precision
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast_for(precision: str, device: torch.device | str):
    """``torch.autocast`` for a resolved precision (a no-op context for ``"fp32"``).

    Examples
    --------
    >>> with autocast_for("fp32", "cpu"):
    ...     torch.ones(2).dtype
    torch.float32
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
