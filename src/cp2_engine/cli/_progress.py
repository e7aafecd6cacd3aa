"""The one way the command line shows a job's progress: a tqdm bar and log lines."""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import Any

from cp2_engine.util import ProgressEvent, drain


class ProgressDisplay:
    """Shows every engine progress event the same way, whatever the job.

    ``done`` of ``total`` drives one tqdm bar (on stderr; its length follows ``total``, None:
    a counter); the message of a tick (a step, an image, a block) is the bar's postfix, the
    message of every other event is printed as a line on stdout (also with ``disable``).

    Parameters
    ----------
    desc : str
        The bar's label.
    unit : str
        What ``done`` counts, for the bar's rate.
    disable : bool
        No bar (``--no-progress``); the lines are still printed.

    Examples
    --------
    >>> from cp2_engine.util import ProgressEvent
    >>> def job():
    ...     yield ProgressEvent(done=0, total=2, message="starting")
    ...     yield ProgressEvent(done=2, total=2, message="both done")
    ...     return 42
    >>> ProgressDisplay("demo", disable=True).follow(job())
    starting
    both done
    42
    """

    def __init__(self, desc: str, *, unit: str = "step", disable: bool = False) -> None:
        self.desc, self.unit, self.disable = desc, unit, disable
        self.bar = None

    def __call__(self, event: Any) -> None:
        """Show ``event`` (anything that is not a progress event is ignored)."""
        if not isinstance(event, ProgressEvent):
            return
        from tqdm import tqdm

        if self.bar is None:  # a resumed job starts at its done: rate and ETA count this run
            self.bar = tqdm(total=event.total, unit=self.unit, desc=self.desc,
                            initial=event.done, disable=self.disable)  # fmt: skip
        if self.bar.total != event.total:
            self.bar.total = event.total
        self.bar.update(event.done - self.bar.n)
        if event.tick:
            self.bar.set_postfix_str(event.message, refresh=False)
        else:
            self.bar.write(event.message)
            sys.stdout.flush()
        self.bar.refresh()

    def close(self) -> None:
        """Close the bar (a later event opens a new one)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def follow(self, gen: Generator) -> Any:
        """Drain ``gen``, showing its events; close the bar at the end; return the result."""
        try:
            return drain(gen, on_event=self)
        finally:
            self.close()
