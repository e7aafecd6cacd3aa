"""Helpers for the engine's progress generators."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any


def drain(gen: Generator[Any, Any, Any]) -> Any:
    """Run a progress generator to its end, ignoring its events; return its return value.

    Examples
    --------
    >>> def work():
    ...     yield "halfway"
    ...     return 42
    >>> drain(work())
    42
    """
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
