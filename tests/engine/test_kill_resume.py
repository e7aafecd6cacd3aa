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
from kill_harness import cp2, job, kill_after, run, sha256_tree, temp_files
from kill_jobs import make_hitl_project


def _state(path):
    from cp2_engine.network import load_state_dict

    return load_state_dict(path)


def _assert_same_weights(a, b) -> None:
    """Bitwise equal weights."""
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


# --------------------------------------------------------------------------- cp2 train
def _write_folder(folder, n=2, size=64):
    import tifffile

    from cp2_engine.synthetic import touching_cells

    folder.mkdir(parents=True)
    for i in range(n):
        s = touching_cells((size, size), n_cells=6, diameter=16, seed=20 + i)
        tifffile.imwrite(folder / f"im{i}.tif", s.image)
        tifffile.imwrite(folder / f"im{i}_masks.tif", s.labels.astype(np.uint16))
    return folder


def _train_cmd(images, out):
    return cp2("train", "--images", images, "--out", out, "--name", "m", "--epochs", 5,
               "--bsize", 32, "--batch-size", 4, "--save-every", 1, "--device", "cpu",
               "--precision", "fp32", "--min-train-masks", 1, "--no-progress")  # fmt: skip


def test_cp2_train_resumes_after_kill(tmp_path):
    import json

    from cp2_engine.training import load_checkpoint

    images = _write_folder(tmp_path / "images")
    inputs = sha256_tree(images)
    run(_train_cmd(images, tmp_path / "ref"))
    ckpt = tmp_path / "out" / "models" / "m.ckpt"
    for kill_at in (2, 3):
        kill_after(_train_cmd(images, tmp_path / "out"), r"^checkpoint saved", kill_at)
        assert not temp_files(tmp_path / "out")
    done = load_checkpoint(ckpt)["epoch"]
    lines = run(_train_cmd(images, tmp_path / "out"))
    assert any(line.endswith(f"; resuming at epoch {done + 1} of 5") for line in lines)
    _assert_same_weights(tmp_path / "ref" / "models" / "m", tmp_path / "out" / "models" / "m")
    log = (tmp_path / "out" / "models" / "m_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in log] == [0, 1, 2, 3, 4]
    assert sha256_tree(images) == inputs
    assert not temp_files(tmp_path / "out")


# --------------------------------------------------------------------------- recipe training
def test_recipe_training_resumes_after_kill(tmp_path):
    import json

    from test_recipe_training import RECIPE

    from cp2_engine.training import load_checkpoint

    data = tmp_path / "data" / "toy" / "train"
    _write_folder(data, n=3)
    for i in range(3):
        (data / f"im{i}.tif").rename(data / f"im{i}_img.tif")
    rows = ["id,type,median_diameter_px"] + [f"im{i},fluo,16.0" for i in range(3)]
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "toy_train.csv").write_text("\n".join(rows[:3]) + "\n")
    (tmp_path / "splits" / "toy_val.csv").write_text("\n".join([rows[0], rows[3]]) + "\n")
    recipe = tmp_path / "tiny.toml"
    text = RECIPE.replace("{schedule}", "cycles = [4, 6]")
    recipe.write_text(text.replace("checkpoint_seconds = 1000", "checkpoint_seconds = 0"))
    inputs = sha256_tree(tmp_path / "data")

    def cmd(out):
        return cp2("train", "--recipe", recipe, "--out", tmp_path / out, "--data",
                   tmp_path / "data", "--device", "cpu", "--no-progress",
                   "--threads", 1)  # fmt: skip

    run(cmd("ref"))
    # mid cycle 1 (after its step 2), then mid cycle 2 (after its step 2 or 3 of 6)
    for kill_at in (2, 4):
        kill_after(cmd("out"), r"^checkpoint saved", kill_at)
        assert not temp_files(tmp_path / "out")
    cycle = 2 if (tmp_path / "out" / "cycle1" / "tiny").is_file() else 1
    done = load_checkpoint(tmp_path / "out" / f"cycle{cycle}" / "train.ckpt")["step"]
    lines = run(cmd("out"))
    assert f"cycle {cycle}/2 resumes at step {done}" in lines and done > 0
    assert cycle == 2 and done < 6  # steps of cycle 2 run after the resume
    for k in (1, 2):  # bitwise on the CPU: the exported weights and every logged loss
        _assert_same_weights(tmp_path / "ref" / f"cycle{k}" / "tiny",
                             tmp_path / "out" / f"cycle{k}" / "tiny")  # fmt: skip
        ref, out = ([json.loads(x) for x in (tmp_path / d / f"cycle{k}" / "train_log.jsonl")
                     .read_text().splitlines()] for d in ("ref", "out"))  # fmt: skip
        assert [r["step"] for r in out] == list(range((4, 6)[k - 1]))
        assert [(r["loss"], r["lr"]) for r in out] == [(r["loss"], r["lr"]) for r in ref]
    assert sha256_tree(tmp_path / "data") == inputs
    assert not temp_files(tmp_path / "out")


# --------------------------------------------------------------------------- zoo building
def test_zoo_build_resumes_after_kill(tmp_path):
    from cp2_engine.zoo import load_zoo

    run(job("zoo", tmp_path / "ref"))
    out = tmp_path / "zoo"
    # mid first model, then mid a later model (after 4 more checkpoints)
    for kill_at in (2, 4):
        kill_after(job("zoo", out), r"^saved \d+", kill_at)
        assert not temp_files(out)
        for model in (out / "models").glob("*.pth"):
            _state(model)  # every model under its final name is complete
    lines = run(job("zoo", out))
    assert any(ln.startswith("skip:") for ln in lines)
    assert _started(lines) > 0  # the interrupted model resumed
    ref, got = load_zoo(tmp_path / "ref"), load_zoo(out)
    assert [c.model for c in got.manifest.clusters] == [c.model for c in ref.manifest.clusters]
    for rel in [c.model for c in ref.manifest.clusters] + ["models/generalist.pth"]:
        _assert_same_weights(tmp_path / "ref" / rel, out / rel)
    assert not (out / "models" / ".unfinished").exists()
    assert not temp_files(out)


# --------------------------------------------------------------------------- large images
def test_large_segmentation_resumes_after_kill(tmp_path):
    import zarr

    from cp2_engine.synthetic import touching_cells

    sample = touching_cells((400, 400), diameter=20, seed=5, irregularity=0.1)
    image = tmp_path / "image.zarr"
    zarr.create_array(str(image), shape=sample.image.shape, chunks=(100, 100),
                      dtype=sample.image.dtype)[:] = sample.image  # fmt: skip
    inputs = sha256_tree(image)
    run(job("large", image, tmp_path / "ref.zarr"))
    out = tmp_path / "out.zarr"
    kill_after(job("large", image, out), r"^BlockDone", 5)
    lines = run(job("large", image, out))
    assert sum("skipped=True" in ln for ln in lines) >= 5  # finished blocks are not redone
    np.testing.assert_array_equal(zarr.open_array(str(out))[:],
                                  zarr.open_array(str(tmp_path / "ref.zarr"))[:])  # fmt: skip
    assert sha256_tree(image) == inputs
    assert not (tmp_path / "out.zarr.cp2parts").exists()


# --------------------------------------------------------------------------- cp2 experiment
def _experiment_cmd(name, out, pretrained, *extra):
    return cp2("experiment", name, "--quick", "--out", out, "--pretrained", pretrained,
               "--epochs-online", 1, "--epochs-offline", 1, "--bsize", 32, "--n-train", 2,
               "--n-test", 1, "--device", "cpu", *extra)  # fmt: skip


def _rows_without_times(path):
    import json

    rows = json.loads(path.read_text())["rows"]
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


def _pretrained_file(folder):
    from cp2_engine.network import CPnet, save_model

    folder.mkdir()
    torch.manual_seed(0)
    save_model(CPnet(), folder / "pretrained")
    return folder / "pretrained"


def test_cp2_experiment_hitl_vs_offline_resumes_after_kill(tmp_path):
    pretrained = _pretrained_file(tmp_path / "start")
    inputs = sha256_tree(tmp_path / "start")
    result = "hitl-vs-offline_keep0.75.json"

    def cmd(out):
        return _experiment_cmd("hitl-vs-offline", tmp_path / out, pretrained, "--rounds", 2)

    ref = run(cmd("ref"))
    assert sum("training" in ln for ln in ref) == 10  # 3 online strategies x 2, 2 offline x 2
    out = tmp_path / "out"
    # pretrained_online_random round 2 training (its image accepted: the pending record is
    # used), then, in the resumed run, pretrained_offline N=1 training
    kill_after(cmd("out"), r"^training on ", 2)
    assert not temp_files(out)
    lines = kill_after(cmd("out"), r"^training on ", 2)
    assert any(ln.startswith("continuing the run") for ln in lines)
    assert not temp_files(out)
    lines = run(cmd("out"))
    assert sum("training" in ln for ln in lines) < 10  # finished points were not recomputed
    assert (out / result).is_file() and (out / result.replace(".json", ".csv")).is_file()
    assert _rows_without_times(out / result) == _rows_without_times(tmp_path / "ref" / result)
    for strategy in ("pretrained_online_random", "scratch_online"):
        projects = list((out / "journal" / "work").glob(f"{strategy}-*"))
        assert len(projects) == 1  # the resumed runs reused the first run's HITL project
        ref_project = next((tmp_path / "ref" / "journal" / "work").glob(f"{strategy}-*"))
        _assert_same_weights(ref_project / "models/round_002", projects[0] / "models/round_002")
    assert sha256_tree(tmp_path / "start") == inputs


def test_cp2_experiment_learning_curve_resumes_after_kill(tmp_path):
    pretrained = _pretrained_file(tmp_path / "start")

    def cmd(out, *extra):
        return _experiment_cmd("learning-curve", tmp_path / out, pretrained, "--sizes", 1, 2,
                               "--seeds", 1, *extra)  # fmt: skip

    run(cmd("ref"))
    kill_after(cmd("out"), r"^training on ", 3)  # 2 rows finished, the 3rd training
    assert not temp_files(tmp_path / "out")
    lines = run(cmd("out"))
    assert sum("training" in ln for ln in lines) == 2
    assert _rows_without_times(tmp_path / "out" / "learning-curve.json") == _rows_without_times(
        tmp_path / "ref" / "learning-curve.json"
    )
    # other settings in the same folder are other points (keyed by what they depend on): the
    # finished ones stay, only the new ones train
    lines = run(cmd("out", "--epochs-offline", 2))
    assert sum("training" in ln for ln in lines) == 4
    assert len(list((tmp_path / "out" / "journal").glob("offline-*.json"))) == 8
