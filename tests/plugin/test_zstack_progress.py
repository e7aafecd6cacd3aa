"""Per-plane progress of a z-stack segmentation in the Segment panel: the job passes on the
engine's ``Model.iter_segment`` events, whose messages ("YX planes 12/64") and done / total the
panel's status line and progress bar show (as for every job) while the worker runs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_cp2._jobrunner import describe
from napari_cp2._jobs import segment_job

PLUGIN = "napari-cp2"


# ----------------------------------------------------------------------- viewer-free helpers
class _Stacked:
    """A segmenter with ``iter_segment`` (two stages) that records how it was called."""

    def __init__(self):
        self.closed = False

    def iter_segment(self, image, **options):
        from cp2_engine.inference import PlaneProgress

        self.options = options
        try:
            for done in range(3):
                yield PlaneProgress.of("YX planes", done, 2)
            yield PlaneProgress.of("masks", 0, 1)
            yield PlaneProgress.of("masks", 1, 1)
        finally:
            self.closed = True
        return "seg"


def _eimg(shape=(3, 8, 8)):
    return SimpleNamespace(image=np.zeros(shape), channels=(0, 0), channel_axis=None, stack=True)


def _drain(gen):
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value


def test_segment_job_passes_on_plane_progress():
    model = _Stacked()
    items, result = _drain(segment_job({"m": model}, "m", _eimg(), diameter=0.0, do_3d=True))
    assert result == ("m", "seg")
    assert model.options == {"diameter": None, "channels": (0, 0), "channel_axis": None,
                             "do_3d": True}  # fmt: skip
    assert items[:2] == ["loading model m", "segmenting a z-stack of 3 planes"]
    shown = [describe(p) for p in items[2:]]  # what the panel's status line and bar show
    assert shown == [("YX planes 0/2", 0, 2), ("YX planes 1/2", 1, 2), ("YX planes 2/2", 2, 2),
                     ("computing masks", 0, 1), ("masks computed", 1, 1)]  # fmt: skip


def test_cancelling_the_job_closes_the_engine_generator():
    model = _Stacked()
    gen = segment_job({"m": model}, "m", _eimg(), diameter=5.0, do_3d=True)
    while getattr(next(gen), "message", "") != "YX planes 1/2":
        pass
    gen.close()
    assert model.closed


def test_segmenters_without_iter_segment_still_segment():
    zoo = SimpleNamespace(segment=lambda image, **options: ("zoo seg", options["diameter"]))
    items, result = _drain(segment_job({"z": zoo}, "z", _eimg(), diameter=12.0))
    assert result == ("z", ("zoo seg", 12.0))
    assert items == ["loading model z", "segmenting a z-stack of 3 planes"]


# ------------------------------------------------------------------------ through napari
@pytest.mark.gui
def test_zstack_segmentation_shows_per_plane_progress(make_napari_viewer, qtbot):
    """File > Open Sample > z-stack, Plugins > Model & segment, '3-D (z-stack)' on, Run in a
    worker thread: the status line shows the planes done per orientation, the bar follows."""
    pytest.importorskip("npe2")
    viewer = make_napari_viewer()
    image, _ = viewer.open_sample(PLUGIN, "zstack")
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Model & segment")
    seg._threaded = True  # napari's thread_worker, as for a user
    seg._image.value = image
    seg._model.value = "cp2_nuclei"
    seg._diameter.value = 34.0  # network planes at half size: a quick run
    seg._do_3d.value = True
    shown = []  # (status line, bar value, bar maximum) after every message of the worker
    show = seg._on_progress

    def spy(item):
        show(item)
        shown.append((seg._status.value, seg._progress.value, seg._progress.max))

    seg._on_progress = spy  # the panel hands its progress callback to the task at Run

    seg._run.native.click()
    qtbot.waitUntil(lambda: seg.task is not None and not seg.task.running, timeout=240_000)
    masks_name = f"{image.name}_cp2_masks"
    assert masks_name in viewer.layers, seg._status.value

    assert seg.task.worker is not None  # it ran in a worker thread
    texts = [text for text, _, _ in shown]
    for stage in ("YX planes", "ZX planes", "ZY planes"):
        steps = [(v, m) for text, v, m in shown if text.startswith(stage + " ")]
        assert steps, (stage, texts)
        total = steps[0][1]
        assert total > 0 and all(m == total for _, m in steps), (stage, steps)
        assert steps[-1] == (total, total), (stage, steps)  # the bar reached the end
        assert f"{stage} {total}/{total}" in texts
    assert "computing masks" in texts
    assert (
        texts.index("YX planes 0/24")
        < texts.index("ZX planes 0/64")
        < texts.index("ZY planes 0/64")
    )  # planes at the network's scale: (24 x 2, 128, 128) x 17 / 34
    assert seg._progress.value == seg._progress.max == 1 and seg._status.value.endswith("ROIs")
