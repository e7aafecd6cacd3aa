"""Helpers for the engine's progress generators."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any


def drain(gen: Generator[Any, Any, Any], on_event: Callable[[Any], Any] | None = None) -> Any:
    """Run a progress generator to its end and return its return value.

    Parameters
    ----------
    gen : generator
        A progress generator (``iter_train``, ``iter_build_zoo``, ...).
    on_event : callable, optional
        Called with every event the generator yields (a progress bar, a logger, ...).

    Examples
    --------
    >>> def work():
    ...     yield "halfway"
    ...     return 42
    >>> drain(work())
    42
    >>> seen = []
    >>> drain(work(), on_event=seen.append), seen
    (42, ['halfway'])
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
