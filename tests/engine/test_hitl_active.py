"""Active choice of the next image: ranking by the current model's uncertainty, through the
engine function, ``HitlProject.next_image("active")`` and ``cp2 hitl next``."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

from cp2_engine.cli import main
from cp2_engine.hitl import HitlProject, ProjectLockedError, rank_images
from cp2_engine.hitl._active import SIGNALS
from cp2_engine.hitl._lock import LOCK_NAME
from cp2_engine.inference import Model
from cp2_engine.synthetic import touching_cells

DIAM = 16


@pytest.fixture(scope="module")
def nuclei_model():
    return Model.load("cp2_nuclei", device="cpu")


@pytest.fixture(scope="module")
def images():
    """Two fluorescent-nuclei images the nucleus model segments well, and one it fails on
    (contrast inverted and buried in noise)."""
    good = [touching_cells((96, 96), diameter=DIAM, seed=s).image.astype(np.float32)
            for s in (3, 5)]  # fmt: skip
    rng = np.random.default_rng(0)
    bad = good[0].max() - good[0] + rng.normal(0, 1.5 * good[0].std(), good[0].shape)
    return {"good_a": good[0], "good_b": good[1], "bad": bad.astype(np.float32)}


def test_badly_segmented_image_ranks_first(nuclei_model, images):
    ranking = rank_images(nuclei_model, images, diameter=DIAM)
    assert ranking[0].name == "bad"
    assert sorted(r.name for r in ranking) == sorted(images)
    scores = [r.score for r in ranking]
    assert scores == sorted(scores, reverse=True)
    for r in ranking:
        assert 0.0 <= r.score <= 1.0 and r.reason
        assert set(r.signals) == set(SIGNALS) and r.signals["style"] is None
        json.dumps(r.to_dict())  # JSON-ready
    good = {r.name: r for r in ranking}["good_a"]
    assert good.n_masks > 5 and good.signals["flips"] < 0.2 and good.flow_error < 0.4
    assert "no masks found" in ranking[0].reason or ranking[0].score > good.score + 0.2


def test_style_distance_to_accepted_images(nuclei_model, images):
    phase = touching_cells((96, 96), diameter=DIAM, seed=7, style="phase").image
    candidates = {"same": images["good_a"], "phase": phase}
    ranking = rank_images(nuclei_model, candidates, accepted=[images["good_a"]], diameter=DIAM,
                          weights={"flow": 0, "boundary": 0, "flips": 0})  # fmt: skip
    by_name = {r.name: r for r in ranking}
    assert by_name["same"].signals["style"] < 0.01  # its own style
    assert by_name["phase"].signals["style"] > by_name["same"].signals["style"]
    assert ranking[0].name == "phase" and "style distance" in ranking[0].reason


def test_bad_weights_are_refused(nuclei_model, images):
    with pytest.raises(ValueError, match="unknown signal"):
        rank_images(nuclei_model, images, weights={"entropy": 1})
    with pytest.raises(ValueError, match=">= 0"):
        rank_images(nuclei_model, images, weights={"flow": -1})


@pytest.fixture
def project(tmp_path, images):
    names = list(images)
    return HitlProject.create(tmp_path / "proj", images=[images[n] for n in names], names=names,
                              initial_model="cp2_nuclei", diameter=DIAM, device="cpu")  # fmt: skip


def _hold_lock_elsewhere(folder) -> None:
    """A lock file as another live process on this host would leave it."""
    record = {"pid": os.getppid(), "host": socket.gethostname(), "command": "other",
              "since": "now"}  # fmt: skip
    (folder / LOCK_NAME).write_text(json.dumps(record))


def test_project_next_image_strategies(project):
    assert project.next_image() == project.next_image("order") == "good_a"
    with pytest.raises(ValueError, match="strategy"):
        project.next_image("random")
    before = (project.folder / "project.json").read_text()
    _hold_lock_elsewhere(project.folder)  # reading needs no lock
    with pytest.raises(ProjectLockedError):
        project.accept("good_a", np.zeros((96, 96), np.uint16))
    assert project.next_image("active") == "bad"
    ranking = project.rank_next()
    assert ranking[0].name == "bad" and len(ranking) == 3
    assert (project.folder / "project.json").read_text() == before
    assert not list((project.folder / "predictions").iterdir())  # ranking stores nothing
    (project.folder / LOCK_NAME).unlink()
    project.accept("bad", np.zeros((96, 96), np.uint16))
    ranking = project.rank_next()
    assert {r.name for r in ranking} == {"good_a", "good_b"}
    assert all(r.signals["style"] is not None for r in ranking)


def test_cli_hitl_next_active(project, capsys):
    assert main(["hitl", "next", str(project.folder)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "next: good_a"
    assert main(["hitl", "next", str(project.folder), "--strategy", "active", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["next"] == "bad" and record["strategy"] == "active"
    assert record["ranking"][0]["name"] == "bad"
    assert all(r["reason"] for r in record["ranking"])
    assert main(["hitl", "next", str(project.folder), "--strategy", "active"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("next: bad") and "score" in out
    assert main(["hitl", "status", str(project.folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 3


def test_cli_hitl_missing_project(tmp_path, capsys):
    assert main(["hitl", "next", str(tmp_path / "nothing")]) == 2
    assert "no HITL project" in capsys.readouterr().err


def test_active_choice_refuses_z_stack_projects(tmp_path):
    stack = np.zeros((3, 32, 32), np.float32)
    p = HitlProject.create(tmp_path / "s", images=[stack, stack], initial_model="scratch",
                           stacks=True)  # fmt: skip
    assert p.next_image() == "image_000"
    with pytest.raises(ValueError, match="z-stacks"):
        p.next_image("active")
