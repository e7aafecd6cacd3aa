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


def relay(gen: Generator[Any, Any, Any], convert: Callable[[Any], Any]) -> Generator:
    """Re-yield ``convert(event)`` for every event of ``gen`` and return its return value.

    For ``yield from`` in a wrapping generator; closing the wrapper (a cancelled job) closes
    ``gen`` too, so the wrapped work stops at its next event.

    Examples
    --------
    >>> def work():
    ...     yield 1
    ...     yield 2
    ...     return "done"
    >>> seen = []
    >>> drain(relay(work(), lambda e: e * 10), on_event=seen.append), seen
    ('done', [10, 20])
    """
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            yield convert(event)
    finally:
        gen.close()
