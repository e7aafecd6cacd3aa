"""Screenshots of the napari plugin, taken along the user's own path.

The script opens a napari window, opens the "cp2" dock the way the Plugins menu does
(``add_plugin_dock_widget("napari-cp2", "cp2")``), loads the phase-contrast sample the way
File > Open Sample > napari-cp2 does, segments it with the bundled ``cp2_cyto`` model by
clicking **Run** in the Segment tab, and saves two PNGs:

- ``docs/images/napari_plugin_menu.png``: the whole window (canvas, layer list, cp2 dock);
- ``docs/images/napari_canvas.png``: the canvas alone (image with the cp2 masks).

and, along the same path with the z-stack sample (the Segment tab's "3-D (z-stack)" box on,
``cp2_nuclei``), ``docs/images/napari_zstack_3d.png``: the window in napari's 3-D view; and
``docs/images/napari_batch.png`` / ``napari_measure.png``: the Batch tab after a folder of the
sample images (``cp2_nuclei``), with the first result opened by **Next**, and the Measure tab
with its measurements.

Run it headless with::

    xvfb-run -a .venv/bin/python scripts/napari_screenshots.py [--out-dir docs/images] \
        [--only 2d|3d|batch]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger("napari_screenshots")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_LAYER = "usiigaci_phase_3t3"
MODEL = "cp2_cyto"
DIAMETER = 38.0  # the sample's annotated median diameter is 38.3 px


def _process_events(app, seconds: float = 0.5) -> None:
    """Let Qt paint and deliver queued events for about ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def _segment_in_dock(viewer, app, widget, image, model: str, diameter: float, **options) -> str:
    """Press Run in the cp2 dock's Segment tab (in this thread, so the masks exist before the
    screenshot); show only the image and its masks. Returns the masks layer's name."""
    panel = widget.segment
    panel._threaded = False
    widget.reset_choices()
    panel._image.value = image
    panel._model.value = model
    panel._diameter.value = diameter
    for name, value in options.items():  # e.g. do_3d=True: the panel's "3-D" box
        getattr(panel, f"_{name}").value = value
    log.info("segmenting %s with %s at diameter %.1f px", image.name, model, diameter)
    t0 = time.perf_counter()
    panel._run.native.click()
    _process_events(app, 1.0)
    masks_name = f"{image.name}_cp2_masks"
    if masks_name not in viewer.layers:
        raise RuntimeError(
            f"no {masks_name!r} layer after Run; layers: {[la.name for la in viewer.layers]}"
        )
    n_cells = int(viewer.layers[masks_name].data.max())
    log.info("Run gave %d cells in %.1f s", n_cells, time.perf_counter() - t0)
    # the sample's ground truth stays in the layer list, hidden: the canvas shows the prediction
    for layer in viewer.layers:
        layer.visible = layer.name in (image.name, masks_name)
    viewer.layers.selection.active = viewer.layers[masks_name]
    return masks_name


def take_screenshots(out_dir: Path, width: int = 1400, height: int = 900) -> list[Path]:
    """Open napari, segment the phase sample through the cp2 dock, save the screenshots.

    Parameters
    ----------
    out_dir : pathlib.Path
        Folder for ``napari_plugin_menu.png`` and ``napari_canvas.png`` (created if missing).
    width, height : int, optional
        Size of the napari window in pixels.

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    RuntimeError
        If segmenting the sample produced no masks layer.
    """
    import napari
    from qtpy.QtWidgets import QApplication

    out_dir.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    try:
        viewer.window._qt_window.resize(width, height)
        app = QApplication.instance()

        # Plugins > cp2 > cp2: one dock with the Segment, Correct, Train and Evaluate tabs.
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-cp2", "cp2")
        log.info("opened the cp2 dock (tabs: Segment, Correct, Train, Evaluate)")

        # File > Open Sample > napari-cp2 > Phase-contrast cells (Usiigaci, MIT).
        viewer.open_sample("napari-cp2", "phase")
        log.info("opened sample layers: %s", [layer.name for layer in viewer.layers])

        _segment_in_dock(viewer, app, widget, viewer.layers[SAMPLE_LAYER], MODEL, DIAMETER)
        viewer.reset_view()
        _process_events(app, 1.0)

        window_png = out_dir / "napari_plugin_menu.png"
        canvas_png = out_dir / "napari_canvas.png"
        viewer.screenshot(path=str(window_png), canvas_only=False)
        viewer.screenshot(path=str(canvas_png), canvas_only=True)
        log.info("saved %s and %s", window_png, canvas_png)
        return [window_png, canvas_png]
    finally:
        viewer.close()


def take_zstack_screenshot(out_dir: Path, width: int = 1400, height: int = 900) -> Path:
    """Segment the z-stack sample in 3-D through the cp2 dock; save the window in 3-D view."""
    import napari
    from qtpy.QtWidgets import QApplication

    out_dir.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    try:
        viewer.window._qt_window.resize(width, height)
        app = QApplication.instance()
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-cp2", "cp2")
        image, _truth = viewer.open_sample("napari-cp2", "zstack")  # File > Open Sample
        # anisotropy 2 comes from the layer's scale
        _segment_in_dock(viewer, app, widget, image, "cp2_nuclei", 20.0, do_3d=True)
        viewer.dims.ndisplay = 3
        viewer.reset_view()
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        camera.angles = (10.0, -40.0, 70.0)  # a tilted view, so that z is visible
        camera.zoom *= 0.8
        _process_events(app, 1.5)
        png = out_dir / "napari_zstack_3d.png"
        viewer.screenshot(path=str(png), canvas_only=False)
        log.info("saved %s", png)
        return png
    finally:
        viewer.close()


def take_batch_screenshots(out_dir: Path, width: int = 1400, height: int = 900) -> list[Path]:
    """Batch-segment a folder of the sample images through the cp2 dock's Batch tab, open the
    first result with Next, measure it in the Measure tab; save both tabs."""
    import shutil
    import tempfile

    import napari
    from qtpy.QtWidgets import QApplication

    out_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="cp2_batch_"))
    for path in sorted((ROOT / "sample_data").glob("*.tif")):
        if not path.stem.endswith("_masks"):
            shutil.copy(path, folder / path.name)
    (folder / "corrupt.tif").write_bytes(b"II*\x00" + b"\x00" * 64)  # reported, skipped
    viewer = napari.Viewer(show=True)
    try:
        viewer.window._qt_window.resize(width, height)
        app = QApplication.instance()
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-cp2", "cp2")
        widget.tabs.setCurrentIndex(4)  # the Batch tab
        batch = widget.batch
        batch._jobs.threaded = False  # in this thread: the results exist before the screenshot
        batch._folder.value = folder
        batch._model.value = "cp2_nuclei"
        batch._diameter.value = 17.0
        batch._formats["geojson"].value = True
        batch._run.native.click()
        log.info("batch: %s", batch._status.value)
        batch._next.native.click()  # the first result, for correction
        viewer.reset_view()
        _process_events(app, 1.0)
        batch_png = out_dir / "napari_batch.png"
        viewer.screenshot(path=str(batch_png), canvas_only=False)
        widget.tabs.setCurrentIndex(5)  # the Measure tab
        widget.measure._measure.native.click()
        _process_events(app, 1.0)
        measure_png = out_dir / "napari_measure.png"
        viewer.screenshot(path=str(measure_png), canvas_only=False)
        log.info("saved %s and %s", batch_png, measure_png)
        return [batch_png, measure_png]
    finally:
        viewer.close()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-dir", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go"
    )
    parser.add_argument(
        "--only", choices=["2d", "3d", "batch"], help="take only these screenshots"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    written = take_screenshots(args.out_dir) if args.only in (None, "2d") else []
    if args.only in (None, "3d"):
        written.append(take_zstack_screenshot(args.out_dir))
    if args.only in (None, "batch"):
        written += take_batch_screenshots(args.out_dir)
    print("wrote " + " ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
