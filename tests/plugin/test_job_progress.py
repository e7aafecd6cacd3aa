"""One code path shows every job's progress: the JobRunner puts the ``message`` of each engine
event (a ``cp2_engine.util.ProgressEvent``) in the status line and its ``done`` / ``total`` in
the bar, for segment_many, a batch and a retraining alike, and through the Train panel."""

from __future__ import annotations

import numpy as np
import pytest


def _runner():
    """run(gen) -> (result, what the status line and bar showed after each event)."""
    from magicgui.widgets import Label, ProgressBar

    from napari_cp2._jobrunner import JobRunner
    from napari_cp2._workspace import Cp2Workspace

    bar, status = ProgressBar(value=0, min=0, max=1), Label(value="")
    runner = JobRunner(Cp2Workspace(), progress=bar, status=status, threaded=False)

    def run(gen):
        seen = []  # (status line, bar value, bar max) after every event
        show = runner.show

        def show_and_record(item):
            show(item)
            seen.append((status.value, bar.value, bar.max))

        runner.show = show_and_record
        out = []
        runner.start(gen, name="job", on_done=out.append)
        runner.show = show
        return out[0], seen

    return run


def test_every_job_fills_the_bar_from_done_and_total(qtbot, tmp_path, tiny_cells):
    from cp2_engine import io
    from cp2_engine.batch import iter_segment_batch
    from cp2_engine.inference import Model, SegmentConfig
    from cp2_engine.training import TrainConfig, iter_train

    run = _runner()
    model = Model.random(seed=0)
    images = [image for image, _ in tiny_cells]

    _, seen = run(model.segment_many(images, diameter=16.0))
    assert seen == [("image 1/2 segmented", 1, 2), ("image 2/2 segmented", 2, 2)]

    for i, image in enumerate(images):
        io.imwrite(tmp_path / f"img{i}.tif", image)
    batch = iter_segment_batch([tmp_path], model="random", segmenter=model,
                               config=SegmentConfig(diameter=16.0))  # fmt: skip
    result, seen = run(batch)
    assert result.counts["segmented"] == 2
    assert [(v, m) for _, v, m in seen] == [(0, 2), (1, 2), (2, 2)]
    assert seen[-1][0] == "2/2 images · img1.tif: segmented · ETA 0m00s"

    config = TrainConfig(n_epochs=2, bsize=32, batch_size=2, min_images_per_epoch=2,
                         warmup_epochs=0, min_train_masks=1, device="cpu",
                         precision="fp32")  # fmt: skip
    train = iter_train(None, images, [labels for _, labels in tiny_cells], config=config)
    _, seen = run(train)
    assert [(v, m) for _, v, m in seen] == [(0, 2), (1, 2), (1, 2), (2, 2), (2, 2)]
    texts = [text for text, _, _ in seen]
    assert texts[0] == "training on 2 images; 0 skipped (too few ROIs)"
    assert texts[1].startswith("epoch 1/2 · step 1/2 · loss ")
    assert texts[4].startswith("epoch 2/2 · loss ") and "ETA" in texts[4]


@pytest.mark.gui
def test_train_panel_shows_ranking_progress_from_the_engine(make_napari_viewer, qtbot, tmp_path,
                                                            tiny_cells, model_file):  # fmt: skip
    """Plugins > Train: 'Suggest next image' ranks in a job whose status line shows the engine's
    RankProgress messages and whose bar counts the images scored."""
    viewer = make_napari_viewer()
    for i, (image, _) in enumerate(tiny_cells):
        viewer.add_image(image, name=f"img_{i}")
    _dock, tr = viewer.window.add_plugin_dock_widget("napari-cp2", "Train (human-in-the-loop)")
    tr._suggest_jobs.threaded = False
    tr.open_project(tmp_path / "p", initial_model=str(model_file))
    seen = []
    show = tr._suggest_jobs.show

    def spy(item):
        show(item)
        seen.append((tr._suggest_jobs.last_text, item.done, item.total))

    tr._suggest_jobs.show = spy
    tr.suggest_next()
    assert seen[0] == ("scoring img_0 (1/2)…", 0, 2)
    assert seen[-1] == ("2 images scored", 2, 2)
    assert tr.last_ranking and np.isfinite(tr.last_ranking[0].score)
