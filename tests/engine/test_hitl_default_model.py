"""One default initial model for HITL projects, and one that cp2 ships."""

from __future__ import annotations

import numpy as np
import pytest

from cp2_engine.hitl import DEFAULT_INITIAL_MODEL, HitlProject
from cp2_engine.network import ModelNotFoundError, find_model


def test_create_and_open_or_create_default_to_the_bundled_model(tmp_path):
    assert DEFAULT_INITIAL_MODEL == "cp2_cyto"
    assert find_model(DEFAULT_INITIAL_MODEL).paths[0].is_file()  # shipped, nothing downloaded
    image = np.zeros((16, 16), np.float32)
    created = HitlProject.create(tmp_path / "a", images=[image])
    opened = HitlProject.open_or_create(tmp_path / "b", images={"x": image})
    assert created.initial_model == opened.initial_model == DEFAULT_INITIAL_MODEL
    assert created.current_model == DEFAULT_INITIAL_MODEL
    assert HitlProject.create(tmp_path / "c", images=[image], initial_model="scratch")


def test_a_model_cp2_cannot_find_is_refused_before_anything_is_written(tmp_path):
    image = np.zeros((16, 16), np.float32)
    with pytest.raises(ModelNotFoundError, match="'cyto2' not found"):
        HitlProject.create(tmp_path / "p", images=[image], initial_model="cyto2")
    assert not (tmp_path / "p").exists()
