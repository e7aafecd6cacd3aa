"""Background jobs: the only module that imports ``napari.qt.threading``.

Every long engine call (loading a model, segmenting, recomputing masks, retraining) runs as a
generator inside a :class:`Task`. A task runs the generator in a napari ``thread_worker``, or
synchronously in the calling thread when threads are switched off, either with
``threaded=False`` or with the environment variable ``CP2_NAPARI_NOTHREADS=1`` (tests, scripts).

A task never lets an exception escape to napari's traceback dialog: engine errors are caught at
the worker boundary and handed to the ``on_error`` callback, which the widgets turn into a
notification.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

__all__ = ["NOTHREADS_ENV", "Task", "threads_enabled"]

logger = logging.getLogger(__name__)

NOTHREADS_ENV = "CP2_NAPARI_NOTHREADS"


def threads_enabled(threaded: bool | None = None) -> bool:
    """Return whether tasks run in a worker thread.

    Parameters
    ----------
    threaded : bool, optional
        Explicit choice; None reads ``CP2_NAPARI_NOTHREADS`` (``1``/``true``/``yes`` = no threads).

    Examples
    --------
    >>> threads_enabled(False)
    False
    """
    if threaded is not None:
        return bool(threaded)
    return os.environ.get(NOTHREADS_ENV, "").strip().lower() not in {"1", "true", "yes"}


@dataclass(frozen=True)
class _Outcome:
    """What a guarded generator returns: a value, or the exception that stopped it."""

    value: Any = None
    error: BaseException | None = None


def _guarded(gen: Generator) -> Generator:
    """Run ``gen`` and return an :class:`_Outcome` instead of raising."""
    try:
        value = yield from gen
    except Exception as exc:  # the worker boundary: every engine error becomes a notification
        logger.debug("cp2 task failed", exc_info=True)
        return _Outcome(error=exc)
    return _Outcome(value=value)


def _noop(*_args) -> None:
    return None


class Task:
    """One background job built from a generator.

    Parameters
    ----------
    gen : generator
        The work; it yields progress items and returns the result.
    name : str
        Job name used in messages ("segmentation", "retraining", ...).
    on_yield, on_done, on_error, on_cancel : callable, optional
        Called in the GUI thread with a progress item, the result, the exception, or nothing.
    threaded : bool, optional
        Run in a worker thread (default: unless ``CP2_NAPARI_NOTHREADS`` is set).

    Examples
    --------
    >>> def job():
    ...     yield 1
    ...     return 42
    >>> out = []
    >>> task = Task(job(), name="demo", on_done=out.append, threaded=False).start()
    >>> out
    [42]
    """

    def __init__(
        self,
        gen: Generator,
        *,
        name: str,
        on_yield: Callable[[Any], None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_cancel: Callable[[], None] | None = None,
        threaded: bool | None = None,
    ) -> None:
        self.name = name
        self._gen = _guarded(gen)
        self._on_yield = on_yield or _noop
        self._on_done = on_done or _noop
        self._on_error = on_error or _noop
        self._on_cancel = on_cancel or _noop
        self._threaded = threads_enabled(threaded)
        self.worker = None
        self.running = False
        self.cancelled = False
        self.detached = False
        #: ``time.perf_counter()`` when the result (or error/cancel) reached the GUI thread.
        self.finished_at: float | None = None

    def start(self) -> Task:
        """Start the job (returns self; in synchronous mode, returns when it is over)."""
        self.running = True
        if self._threaded:
            self._start_thread()
        else:
            self._run_here()
        return self

    def cancel(self, *, quiet: bool = False) -> bool:
        """Ask the job to stop at its next yield; return False when there was nothing to stop.

        ``quiet=True`` also detaches the callbacks (the widgets may be gone, e.g. the viewer
        closed), so nothing touches the GUI afterwards.
        """
        if quiet:
            self.detached = True
        if not self.running or self.cancelled:
            return False
        self.cancelled = True
        if self.worker is not None:
            self.worker.quit()
        return True

    def _run_here(self) -> None:
        try:
            while True:
                if self.cancelled:
                    self._gen.close()
                    self._finish_cancelled()
                    return
                item = next(self._gen)
                self._emit(self._on_yield, item)
        except StopIteration as stop:
            self._finish(stop.value)

    def _start_thread(self) -> None:
        from napari.qt.threading import create_worker

        from cp2_engine.util import tune_allocator

        tune_allocator()  # before the thread exists: it then shares the main malloc heap
        worker = create_worker(lambda: (yield from self._gen), _start_thread=False)
        worker.yielded.connect(lambda item: self._emit(self._on_yield, item))
        worker.returned.connect(self._finish)
        worker.aborted.connect(self._finish_cancelled)
        worker.finished.connect(self._gen.close)
        self.worker = worker
        worker.start()

    def _emit(self, callback: Callable, *args) -> None:
        if not self.detached:
            callback(*args)

    def _finish(self, outcome: Any) -> None:
        self.finished_at = time.perf_counter()
        self.running = False
        if self.cancelled:
            self._finish_cancelled()
        elif isinstance(outcome, _Outcome) and outcome.error is not None:
            self._emit(self._on_error, outcome.error)
        elif isinstance(outcome, _Outcome):
            self._emit(self._on_done, outcome.value)

    def _finish_cancelled(self) -> None:
        if self.running or self.cancelled:
            self.running = False
            self._emit(self._on_cancel)
            self.cancelled = True
            self._on_cancel = _noop
