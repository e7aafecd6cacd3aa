"""Fixtures of the plugin tests: tiny synthetic images and a random-weights model file."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def tiny_cells():
    """Two small synthetic images with exact labels: [(image, labels), ...]."""
    from cp2_engine import synthetic

    out = []
    for seed in (1, 2):
        s = synthetic.touching_cells((96, 96), diameter=16, seed=seed)
        out.append((s.image.astype(np.float32), s.labels))
    return out


@pytest.fixture
def model_file(tmp_path_factory):
    """A saved random-weights cp2 model (loadable by ``Model.load``)."""
    from cp2_engine.inference import Model
    from cp2_engine.network import save_model

    path = tmp_path_factory.mktemp("models") / "random_cp2"
    save_model(Model.random(seed=0, diam_mean=16.0).net, path)
    return path


@pytest.fixture
def notes():
    """Collect napari notifications as (severity, message) while the test runs."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def grab(event):
        seen.append((str(event.severity), event.message))

    notification_manager.notification_ready.connect(grab)
    yield seen
    notification_manager.notification_ready.disconnect(grab)
