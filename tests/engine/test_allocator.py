"""The glibc allocator is tuned wherever the network runs on a CPU: training and the CLI.

Observed from outside, in a fresh process: after tuning, a freed 256 MB buffer stays in the
process (no unmap, so the next step does not page-fault it in again); with glibc's defaults it
is returned to the OS at once. Untuned, a CPU training step was 8.8 s instead of 6.3 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc allocator settings (Linux only)"
)

_PROBE = textwrap.dedent(
    """
    import numpy as np

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    buf = np.ones(256 * 2**20 // 8)
    before = rss_mb()
    del buf
    print("RETURNED_MB", round(before - rss_mb()))
    """
)

_TRAIN = textwrap.dedent(
    """
    from cp2_engine.synthetic import touching_cells
    from cp2_engine.training import TrainConfig, train
    s = touching_cells((64, 64), n_cells=8, diameter=16, seed=0)
    cfg = TrainConfig(n_epochs=1, bsize=32, batch_size=2, min_images_per_epoch=2,
                      device="cpu", warmup_epochs=0, min_train_masks=1)
    train(None, [s.image], [s.labels], config=cfg)
    """
)

_CLI = textwrap.dedent(
    """
    from cp2_engine.cli import main
    assert main(["models"]) == 0
    """
)


def _returned_mb(code: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("CP2_NO_ALLOCATOR_TUNING", None)
    out = subprocess.run(
        [sys.executable, "-c", code + _PROBE], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RETURNED_MB")][-1]
    return int(line.split()[1])


def test_an_untouched_process_returns_a_freed_buffer_to_the_os():
    # the control: without cp2's tuning glibc unmaps the buffer, so the probes below can fail
    assert _returned_mb("") > 200


def test_training_on_the_cpu_keeps_freed_buffers_in_the_process():
    assert _returned_mb(_TRAIN) < 50


def test_the_cp2_command_line_tunes_the_allocator_first():
    assert _returned_mb(_CLI) < 50
