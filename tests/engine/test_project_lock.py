"""Two processes, one HITL project: a writer holds ``project.lock``; a second process that tries
to write gets a clear error naming the first, reading still works, nothing is corrupted, and a
lock left by a killed process is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cp2_engine.hitl import HitlProject, ProjectLockedError
from cp2_engine.hitl._lock import LOCK_NAME

# A second process that holds the project's lock (as during an accept or a retraining round)
# until the file "release" appears, or forever (to be SIGKILLed).
_HOLDER = textwrap.dedent(
    """
    import pathlib, sys, time
    from cp2_engine.hitl import HitlProject
    folder = pathlib.Path(sys.argv[1])
    project = HitlProject.open(folder)
    with project._writing():
        (folder / "holding").write_text("yes")
        while not (folder / "release").exists():
            time.sleep(0.02)
    """
)


def _labels(shape=(16, 16)):
    labels = np.zeros(shape, np.uint16)
    labels[2:7, 2:7] = 1
    return labels


@pytest.fixture
def project(tmp_path):
    images = [np.random.default_rng(i).random((16, 16), dtype=np.float32) for i in range(2)]
    return HitlProject.create(tmp_path / "proj", images=images, initial_model="scratch")


def _start_holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)])
    deadline = time.monotonic() + 60
    while not (folder / "holding").exists():
        assert proc.poll() is None, "the holder process died"
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.02)
    return proc


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("holding", LOCK_NAME)
    }


def test_a_second_process_cannot_write_while_the_first_does(project):
    folder = project.folder
    proc = _start_holder(folder)
    try:
        before = _snapshot(folder)
        holder = json.loads((folder / LOCK_NAME).read_text())
        assert holder["pid"] == proc.pid and holder["host"] == socket.gethostname()
        for write in (
            lambda p: p.accept("image_000", _labels()),
            lambda p: p.set_prediction("image_000", _labels(), model="m"),
            lambda p: next(p.iter_retrain()),
        ):
            with pytest.raises(ProjectLockedError) as info:
                write(HitlProject.open(folder))
            message = str(info.value)
            assert f"process {proc.pid}" in message and str(folder) in message
            assert "delete" in message and LOCK_NAME in message
        with pytest.raises(ProjectLockedError):
            HitlProject.create(folder, images=[np.ones((8, 8))], initial_model="scratch")
        # reading is always allowed, and nothing was written
        assert HitlProject.open(folder).status().n_accepted == 0
        assert _snapshot(folder) == before
    finally:
        (folder / "release").write_text("go")
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert not (folder / LOCK_NAME).exists()
    project.accept("image_000", _labels())  # free again
    assert project.is_accepted("image_000") and not (folder / LOCK_NAME).exists()


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_the_lock_of_a_killed_process_is_taken_over(project):
    folder = project.folder
    proc = _start_holder(folder)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == proc.pid  # left behind
    project.accept("image_000", _labels())
    assert project.is_accepted("image_000")
    assert not (folder / LOCK_NAME).exists()
    assert not list(folder.glob(f".{LOCK_NAME}*")) and not list(folder.glob("*.break"))


def test_a_lock_from_another_host_is_respected(project):
    lock = project.folder / LOCK_NAME
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "command": "napari",
                                "since": "2026-01-01 10:00:00"}))  # fmt: skip
    with pytest.raises(ProjectLockedError, match=r"elsewhere\.example.*napari"):
        project.accept("image_000", _labels())
    assert not project.is_accepted("image_000")
    lock.unlink()  # what the message tells the user to do once that process is gone
    project.accept("image_000", _labels())


def test_one_process_may_hold_several_project_objects(project):
    other = HitlProject.open(project.folder)
    with project._writing():
        other.accept("image_000", _labels())  # re-entrant within the process
        other.set_prediction("image_001", _labels(), model="m")
        assert (project.folder / LOCK_NAME).exists()
    assert not (project.folder / LOCK_NAME).exists()


def test_each_write_starts_from_the_project_file_on_disk(project):
    """A project object opened earlier never writes from a view older than the file."""
    meta = json.loads((project.folder / "project.json").read_text())
    meta["diameter"] = 21.0  # as if another process had changed the project meanwhile
    (project.folder / "project.json").write_text(json.dumps(meta))
    assert project.diameter is None
    project.set_prediction("image_000", _labels(), model="m")
    assert project.diameter == 21.0


def test_a_retraining_round_holds_the_lock_until_it_ends(project):
    from cp2_engine.training import TrainConfig

    project.accept("image_000", _labels())
    config = TrainConfig(n_epochs=1, bsize=16, batch_size=1, min_images_per_epoch=1,
                         warmup_epochs=0, min_train_masks=1, device="cpu")  # fmt: skip
    gen = project.iter_retrain(config=config, evaluate=False)
    next(gen)
    assert json.loads((project.folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    gen.close()
    assert not (project.folder / LOCK_NAME).exists()
