"""The Train panel's "Export model…" action, on the panel napari's Plugins menu builds: after a
retrain, the save dialog's path gets a BioImage.IO package made in a worker, whose bioimageio
test result the panel shows, and which cp2 loads back as the same network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("npe2")
pytest.importorskip("bioimageio.core")

pytestmark = pytest.mark.gui


def _tiny_initial_model(folder):
    from cp2_engine.network import CPnet, save_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        net = CPnet((2, 8, 16, 32), diam_mean=16.0)
    path = folder / "tiny_start"
    save_model(net, path)
    return path


def test_export_after_retrain_from_the_plugins_menu(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, notes, tiny_cells
):
    from cp2_engine.segmenters import load_segmenter
    from napari_cp2 import _export_action

    viewer = make_napari_viewer()
    for i, (image, _labels) in enumerate(tiny_cells):
        viewer.add_image(image, name=f"cells{i}")
    _dock, tr = viewer.window.add_plugin_dock_widget("napari-cp2", "Train (human-in-the-loop)")
    export = tr.export_action
    out = tmp_path / "shared" / "my_model.zip"
    out.parent.mkdir()
    asked = []

    def save_dialog(parent, default):  # the Qt dialog the button opens, answered by "the user"
        asked.append(default)
        return str(out)

    monkeypatch.setattr(_export_action, "ask_save_path", save_dialog)

    export._button.native.click()  # no project: a message, no dialog, no task
    assert export.task is None and not asked
    assert any(sev == "error" and "project" in msg for sev, msg in notes)

    project = tr.open_project(
        tmp_path / "project", initial_model=str(_tiny_initial_model(tmp_path))
    )
    export._button.native.click()  # no retrained model yet
    assert export.task is None and any("retrain first" in msg for _, msg in notes)

    project.accept("cells0", tiny_cells[0][1])
    tr.refresh()
    tr._epochs.value = 1
    tr.extra_config = {"bsize": 64, "batch_size": 2, "min_images_per_epoch": 2}
    tr._retrain.native.click()
    qtbot.waitUntil(lambda: tr.last_record is not None, timeout=120_000)

    notes.clear()
    export._button.native.click()
    task = export.task
    assert asked and asked[0].endswith("round_001.zip")
    assert task is not None and task.worker is not None  # a real worker thread
    qtbot.waitUntil(lambda: not task.running, timeout=300_000)
    assert not any(sev == "error" for sev, _ in notes), notes
    status = export._status.value
    for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
        assert f"bioimageio test {fmt}: passed" in status, status
    assert export.result.passed and any("passed" in msg for _, msg in notes)
    assert task not in tr._ws.tasks

    trained = load_segmenter(str(project.folder / project.rounds[-1]), device="cpu")
    loaded = load_segmenter(str(out), device="cpu")
    for key, value in trained.net.state_dict().items():
        assert torch.equal(value, loaded.net.state_dict()[key]), key
    x = torch.from_numpy(np.random.default_rng(0).random((1, 2, 64, 64), np.float32))
    with torch.inference_mode():
        assert torch.equal(trained.net(x)[0], loaded.net(x)[0])
