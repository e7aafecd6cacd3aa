"""Helpers for the engine's progress generators."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class ProgressEvent:
    """The one shape of every progress event the engine yields.

    Every event type (a training step, a segmented image, a finished block, a demo stage...)
    derives from it and adds its own fields (a loss, a path, ...); a progress bar or a status
    line reads only these three, so one code path shows every job.

    Attributes
    ----------
    done : int
        Units finished (steps, images, blocks...: the unit of the event's work, said in its
        docstring).
    total : int or None
        Units in all; None when not known (yet).
    message : str
        One human-readable line about this event.
    tick : bool
        Class attribute: True for the frequent events of a loop (a step, an image, a block),
        which a text log shows on its progress bar only; the others also get a line.

    Examples
    --------
    >>> event = ProgressEvent(done=3, total=12, message="3/12 images")
    >>> event.fraction
    0.25
    >>> ProgressEvent(done=3, total=None, message="styles").fraction is None
    True
    """

    tick: ClassVar[bool] = False

    done: int
    total: int | None
    message: str

    @property
    def fraction(self) -> float | None:
        """``done / total`` clipped to [0, 1]; None when the total is unknown (or 0)."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


def format_duration(seconds: float) -> str:
    """A duration as ``1m05s`` (for an ETA in a progress message).

    Examples
    --------
    >>> format_duration(65.2), format_duration(-3)
    ('1m05s', '0m00s')
    """
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


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
