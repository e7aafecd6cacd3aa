"""The command line's progress bar: rate and time left of a resumed job count this run only."""

from __future__ import annotations

import io
import re
import time

from cp2_engine.cli._progress import ProgressDisplay
from cp2_engine.util import ProgressEvent


class _Step(ProgressEvent):
    tick = True


def test_a_resumed_job_shows_the_rate_of_the_steps_taken_in_this_run():
    # a training resumed at step 1000 of 2000 showed "5000 step/s, 00:00 left" after 10 steps
    display = ProgressDisplay("training")
    display(ProgressEvent(done=1000, total=2000, message="resumed"))
    display.bar.fp = io.StringIO()
    for step in range(1001, 1011):
        time.sleep(0.02)
        display(_Step(done=step, total=2000, message=f"step {step}"))
    text = str(display.bar)
    display.close()
    rate = float(re.search(r"([\d.]+)step/s", text).group(1))
    assert "1010/2000" in text
    assert rate < 100, text  # 10 steps in >= 0.2 s, not 1010
