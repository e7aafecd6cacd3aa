"""One job lifecycle for every widget: busy state, progress bar and status line, cancel, errors.

A widget owns one :class:`JobRunner` per kind of job (the Train panel has two: retraining and
ranking). The runner starts the engine generator as a :class:`~napari_cp2._workers.Task`,
registers it in the workspace (so closing the viewer cancels it), refuses a second job while one
runs, shows progress (``done`` / ``total`` / ``message`` of the engine's events, or a plain
string), and turns the end of the job into the same messages everywhere: the result goes
to the widget's callback, an error to a notification, a cancel to "cancelled".
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from napari.utils.notifications import show_error, show_info, show_warning

from ._tooltips import message
from ._workers import Task

__all__ = ["JobRunner", "describe"]


def describe(item: Any) -> tuple[str, int | None, int | None] | None:
    """(text, done, total) of a progress item; done/total None when it says nothing of them.

    Strings (the adapters' own steps, e.g. "loading model") are shown as they are; the engine's
    events (every one a :class:`cp2_engine.util.ProgressEvent`) show their message and fill the
    bar with ``done`` of ``total`` (an unknown total: 0, a busy indicator).

    Examples
    --------
    >>> from cp2_engine.batch import BatchProgress
    >>> describe(BatchProgress(done=3, total=10, message="3/10 images · ETA 1m10s"))
    ('3/10 images · ETA 1m10s', 3, 10)
    >>> describe("loading model")
    ('loading model', None, None)
    """
    from cp2_engine.util import ProgressEvent

    if isinstance(item, str):
        return item, None, None
    if isinstance(item, ProgressEvent):
        return item.message or f"{item.done}/{item.total}", item.done, item.total or 0
    return None


class JobRunner:
    """Runs one widget's background jobs, one at a time.

    Parameters
    ----------
    workspace : Cp2Workspace
        The viewer's workspace: running tasks are registered in ``workspace.tasks``.
    progress : magicgui ProgressBar, optional
        Shows done / total (a total of 0: busy indicator).
    status : magicgui Label, optional
        Shows the job's messages and how it ended.
    threaded : bool, optional
        Run in a worker thread (default unless ``CP2_NAPARI_NOTHREADS`` is set).

    Examples
    --------
    >>> from napari_cp2._workspace import Cp2Workspace
    >>> def job():
    ...     yield "halfway"
    ...     return 42
    >>> out = []
    >>> runner = JobRunner(Cp2Workspace(), threaded=False)
    >>> _ = runner.start(job(), name="demo", on_done=out.append)
    >>> out, runner.running, runner.last_text
    ([42], False, 'halfway')
    """

    def __init__(self, workspace, *, progress=None, status=None, threaded=None) -> None:
        self._ws = workspace
        self._progress = progress
        self._status = status
        #: Run in a worker thread (None: unless ``CP2_NAPARI_NOTHREADS`` is set).
        self.threaded = threaded
        self.task: Task | None = None
        self.last_text = ""

    @property
    def running(self) -> bool:
        """Whether a job is running."""
        return self.task is not None and self.task.running

    def busy(self) -> bool:
        """True (and say so) when a job is running."""
        if self.running:
            show_warning(message("busy", job=self.task.name))
            return True
        return False

    def set_status(self, text: str) -> None:
        """Show ``text`` in the status line."""
        self.last_text = str(text)
        if self._status is not None:
            self._status.value = self.last_text

    def _bar(self, done: int | None, total: int | None) -> None:
        if self._progress is None or total is None:
            return
        self._progress.max = max(0, int(total))
        self._progress.value = max(0, min(int(done or 0), int(total)))

    def start(
        self,
        gen,
        *,
        name: str,
        on_done: Callable[[Any], None],
        on_yield: Callable[[Any], Any] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_cancel: Callable[[], None] | None = None,
        total: int = 0,
    ) -> Task | None:
        """Start ``gen`` as job ``name``; None (with a warning) when a job is running.

        ``on_yield`` may return a progress item to show (default: the yielded item itself);
        ``on_error`` / ``on_cancel`` run after the shared handling. ``total`` is the bar's
        length until the first progress (0: busy indicator).
        """
        if self.busy():
            return None
        self._bar(0, total)
        self.set_status(f"{name}…")
        task = Task(
            gen,
            name=name,
            on_yield=partial(self._on_yield, on_yield),
            on_done=partial(self._on_done, on_done),
            on_error=partial(self._on_error, on_error),
            on_cancel=partial(self._on_cancel, on_cancel),
            threaded=self.threaded,
        )
        self.task = task
        self._ws.tasks.append(task)
        return task.start()

    def cancel(self) -> bool:
        """Cancel the running job; tell the user when there is nothing to cancel."""
        if self.task is None or not self.task.cancel():
            show_info(message("nothing_to_cancel"))
            return False
        return True

    # ------------------------------------------------------------------ the job's end
    def _forget(self) -> None:
        if self.task is not None and self.task in self._ws.tasks:
            self._ws.tasks.remove(self.task)

    def show(self, item) -> None:
        """Show a progress item (see :func:`describe`) in the bar and the status line."""
        desc = describe(item) if item is not None else None
        if desc is None:
            return
        text, done, total = desc
        self._bar(done, total)
        self.set_status(text)

    def _on_yield(self, convert, item) -> None:
        self.show(convert(item) if convert is not None else item)

    def _on_done(self, callback, result) -> None:
        self._forget()
        if self._progress is not None:
            self._progress.max = max(1, self._progress.max)
            self._progress.value = self._progress.max
        callback(result)

    def _on_error(self, callback, err: BaseException) -> None:
        self._forget()
        job = self.task.name if self.task is not None else "job"
        self._bar(0, 1)
        self.set_status(f"{job} failed")
        show_error(message("job_failed", job=job, error=err))
        if callback is not None:
            callback(err)

    def _on_cancel(self, callback) -> None:
        self._forget()
        self._bar(0, 1)
        self.set_status("cancelled")
        show_info(message("cancelled", job=self.task.name if self.task else "job"))
        if callback is not None:
            callback()
