"""kill -9 harness: every long job, SIGKILLed mid-way, continues where it stopped when the same
command runs again, keeps the user's inputs bitwise, shows no half-written file under a final
name and ends with the result of an uninterrupted run.

Each test runs the job as a subprocess on tiny synthetic data (``kill_harness.kill_after`` kills
it after its N-th progress line), then runs the same command again; ``KILL_POINTS`` counts the
kill points each test tries (reported in docs/reliability.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kill_harness import job, kill_after, run, sha256_tree, temp_files
from kill_jobs import make_hitl_project


def _state(path):
    from cp2_engine.network import load_state_dict

    return load_state_dict(path)


def _assert_same_weights(a, b) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{key} differs between {a} and {b}"


def _started(lines) -> int:
    return next(int(ln.split()[1]) for ln in lines if ln.startswith("started "))


# --------------------------------------------------------------------------- HITL retraining
def test_hitl_round_resumes_after_kill(tmp_path):
    from cp2_engine.hitl import HitlProject
    from cp2_engine.training import checkpoint_path, load_checkpoint, unfinished_path

    ref, proj = tmp_path / "ref", tmp_path / "proj"
    make_hitl_project(ref)
    make_hitl_project(proj)
    inputs = {k: v for k, v in sha256_tree(proj).items() if k.startswith(("images", "corrected"))}
    run(job("hitl", ref))  # the uninterrupted round
    ckpt = checkpoint_path(unfinished_path(proj / "models" / "round_001"))
    for kill_at in (2, 4):  # kill after the 2nd, then after the 4th saved checkpoint
        kill_after(job("hitl", proj), r"^saved \d+", kill_at)
        assert not list((proj / "models").glob("round_*")), "unregistered round visible"
        assert HitlProject.open(proj).rounds == []
        done = load_checkpoint(ckpt)["epoch"]
        assert done >= kill_at - 1
        if kill_at == 2:
            lines = kill_after(job("hitl", proj), r"^started", 1)
            assert _started(lines) == done + 1  # resumed, not from epoch 0
    done = load_checkpoint(ckpt)["epoch"]
    lines = run(job("hitl", proj))
    assert _started(lines) == done + 1 > 0
    assert HitlProject.open(proj).rounds == ["models/round_001"]
    _assert_same_weights(ref / "models" / "round_001", proj / "models" / "round_001")
    assert sorted(p.name for p in (proj / "models").iterdir()) == ["round_001", "round_001.json"]
    assert not temp_files(proj)
    after = sha256_tree(proj)
    assert all(after[k] == v for k, v in inputs.items())


def test_hitl_restart_discards_the_interrupted_round(tmp_path):
    from cp2_engine.hitl import HitlProject

    proj = tmp_path / "proj"
    make_hitl_project(proj)
    kill_after(job("hitl", proj), r"^saved \d+", 2)
    # an image accepted after the crash: the interrupted round no longer matches
    project = HitlProject.open(proj)
    labels = np.zeros((64, 64), np.uint16)
    labels[8:24, 8:24] = 1
    project.accept(project.next_image(), labels)
    with pytest.raises(ValueError, match="restart"):
        project.retrain(config={"n_epochs": 1})
    lines = run(job("hitl", proj, "--restart"))
    assert _started(lines) == 0
    assert HitlProject.open(proj).rounds == ["models/round_001"]
    assert not (proj / "models" / ".unfinished").exists()
