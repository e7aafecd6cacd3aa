"""Resolve a torch device from a user-facing spec ("auto", "cpu", "cuda", "cuda:1", "mps")."""

from __future__ import annotations

import functools
import logging

import torch

logger = logging.getLogger(__name__)

_VALID = ("auto", "cpu", "cuda", "mps")
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


def use_channels_last(choice: bool | None, device: torch.device) -> bool:
    """Whether to run the network channels-last: ``choice``, or on the CPU when it is None.

    Channels-last convolutions are faster on x86 CPUs; on GPUs cp2 leaves the layout to torch.

    Examples
    --------
    >>> use_channels_last(None, torch.device("cpu")), use_channels_last(False, torch.device("cpu"))
    (True, False)
    """
    if choice is None:
        return device.type == "cpu"
    return bool(choice)
