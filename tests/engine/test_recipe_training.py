"""Bundled-model recipe training: cycles, exact resume, workers, install and recipe errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
import torch
from tiny_recipes import tiny_recipe

from cp2_engine.recipes import (
    CycleFinished,
    CycleStarted,
    is_bundled_recipe,
    iter_train_recipe,
    load_bundled_recipe,
    train_recipe,
)
from cp2_engine.synthetic import touching_cells
from cp2_engine.training import CheckpointSaved, StepEvent, load_checkpoint

RECIPE = tiny_recipe(
    n_images=2,
    weight=0.5,
    schedule="{schedule}",
    train_extra='precision = "fp32"\ncheckpoint_seconds = 1000',
    max_images=2,
    real_source=True,
)


@pytest.fixture
def setup(tmp_path):
    """A recipe in tmp_path/recipes, its split files in tmp_path/splits, data in tmp_path/data."""
    folder = tmp_path / "data" / "toy" / "train"
    folder.mkdir(parents=True)
    rows = ["id,type,median_diameter_px"]
    for i in range(3):
        s = touching_cells((64, 64), n_cells=8, diameter=16, seed=10 + i)
        tifffile.imwrite(folder / f"im{i}_img.tif", s.image)
        tifffile.imwrite(folder / f"im{i}_masks.tif", s.labels.astype(np.uint16))
        rows.append(f"im{i},fluo,16.0")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "toy_train.csv").write_text("\n".join(rows[:3]) + "\n")
    (tmp_path / "splits" / "toy_val.csv").write_text("\n".join([rows[0], rows[3]]) + "\n")
    (tmp_path / "recipes").mkdir()

    def write(schedule="cycles = [3, 2]", text=None):
        path = tmp_path / "recipes" / "tiny.toml"
        path.write_text(text if text is not None else RECIPE.replace("{schedule}", schedule))
        return path

    return tmp_path, write


def _gen(recipe, out, root, **kw):
    return iter_train_recipe(recipe, out=out, data_root=root, device="cpu", threads=1, **kw)


def _run(recipe, out, root, **kw):
    return train_recipe(recipe, out=out, data_root=root, device="cpu", threads=1, **kw)


def test_two_cycles_second_starts_from_first_export(setup):
    tmp, write = setup
    recipe = write()
    assert is_bundled_recipe(recipe)
    events = []
    gen = iter_train_recipe(
        recipe, out=tmp / "out", data_root=tmp / "data", device="cpu", threads=1
    )
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert [c.steps for c in result.cycles] == [3, 2]
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [(e.done, e.total) for e in steps] == [(1, 3), (2, 3), (3, 3), (1, 2), (2, 2)]
    assert {e.epoch for e in steps} == {None}  # a recipe has no epochs (the cycle: CycleStarted)
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert [(e.done, e.total, e.epoch) for e in saved] == [(3, 3, None), (2, 2, None)]
    assert saved[0].message == "checkpoint saved after step 3"
    starts = [e for e in events if isinstance(e, CycleStarted)]
    assert [(e.cycle, e.n_cycles, e.done, e.total) for e in starts] == [(1, 2, 0, 3), (2, 2, 0, 2)]
    finished = [e for e in events if isinstance(e, CycleFinished)]
    assert [(e.cycle, e.done, e.total) for e in finished] == [(1, 3, 3), (2, 2, 2)]
    assert starts[0].init is None and starts[1].init == str(tmp / "out" / "cycle1" / "tiny")
    init = load_checkpoint(tmp / "out" / "cycle2" / "train.ckpt")["init"]
    export1 = tmp / "out" / "cycle1" / "tiny"
    from cp2_engine.network import sha256_file

    assert init["sha256"] == sha256_file(export1) and init["training"]["steps"] == 3
    assert result.cycles[1].init == init
    # a second call skips both finished cycles and trains nothing
    again = list(
        iter_train_recipe(recipe, out=tmp / "out", data_root=tmp / "data", device="cpu", threads=1)
    )
    assert [type(e) for e in again] == [CycleFinished, CycleFinished]
    assert all(e.skipped for e in again)


def test_resume_after_close_replays_the_same_losses(setup):
    tmp, write = setup
    recipe = write("steps = 5")
    reference = _run(recipe, tmp / "a", tmp / "data").losses
    gen = _gen(recipe, tmp / "b", tmp / "data")
    n_steps = 0
    while n_steps < 2:
        n_steps += isinstance(next(gen), StepEvent)
    gen.close()  # cancel mid-cycle: the checkpoint holds 2 steps
    assert load_checkpoint(tmp / "b" / "cycle1" / "train.ckpt")["step"] == 2
    resumed = _run(recipe, tmp / "b", tmp / "data")
    assert resumed.losses == reference  # bitwise on the CPU
    a = load_checkpoint(tmp / "a" / "cycle1" / "train.ckpt")["ema"]
    b = load_checkpoint(tmp / "b" / "cycle1" / "train.ckpt")["ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_of_the_old_recipe_format_still_resumes(setup):
    """Checkpoints written before the one training driver (format 'cp2-recipe-checkpoint',
    optimizer under 'opt') are converted on load: the cycle resumes to the uninterrupted run."""
    tmp, write = setup
    recipe = write("steps = 5")
    reference = _run(recipe, tmp / "a", tmp / "data").losses
    gen = _gen(recipe, tmp / "b", tmp / "data")
    while not isinstance(next(gen), StepEvent):
        pass
    next(gen)
    gen.close()  # the checkpoint holds 1 or 2 steps
    path = tmp / "b" / "cycle1" / "train.ckpt"
    new = load_checkpoint(path)
    old = {"format": "cp2-recipe-checkpoint", "net": new["net"], "opt": new["optimizer"]}
    old |= {k: new[k] for k in ("ema", "step", "losses", "seconds", "total_steps", "hardware",
                                "init")}  # fmt: skip
    torch.save(old, path)
    assert load_checkpoint(path)["step"] == new["step"] > 0
    assert _run(recipe, tmp / "b", tmp / "data").losses == reference  # bitwise on the CPU


def _assert_same_state(a, b, where: str = "") -> None:
    """Checkpoint values (tensors, dicts, lists, numbers) equal bitwise, dtypes included."""
    if torch.is_tensor(a):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_the_old_bf16_key_is_read_as_precision(setup, caplog):
    _, write = setup
    text = RECIPE.replace("{schedule}", "steps = 1").replace('precision = "fp32"', "bf16 = true")
    with caplog.at_level("WARNING"):
        assert load_bundled_recipe(write(text=text)).train.precision == "bf16"
    assert "'bf16 = true' is deprecated" in caplog.text
    text = text.replace("bf16 = true", "bf16 = false")
    assert load_bundled_recipe(write(text=text)).train.precision == "fp32"
    text = text.replace("bf16 = false\n", "")
    assert load_bundled_recipe(write(text=text)).train.precision == "auto"  # the default


def test_resume_from_a_periodic_checkpoint_is_bitwise(setup):
    """What a SIGKILL after the periodic checkpoint of step 2 leaves (the log a line and a half
    further) resumes to the uninterrupted run bitwise: losses, net, SGD momentum, EMA, export."""
    from cp2_engine.network import load_state_dict

    tmp, write = setup
    text = write("cycles = [5, 3]").read_text()
    recipe = write(text=text.replace("checkpoint_seconds = 1000", "checkpoint_seconds = 0"))
    ref, crash = tmp / "ref", tmp / "crash"
    for event in _gen(recipe, ref, tmp / "data"):
        if isinstance(event, CheckpointSaved) and event.done == 2 and not crash.exists():
            shutil.copytree(ref, crash)  # the files as they are right after that checkpoint
    with open(crash / "cycle1" / "train_log.jsonl", "a", encoding="utf-8") as log:
        log.write('{"step": 2, "loss": 0.0, "lr": 0.0, "seconds": 0.0}\n{"step": 3, "lo')
    events = list(_gen(recipe, crash, tmp / "data"))
    assert [e.done for e in events if isinstance(e, CycleStarted)] == [2, 0]
    for k in (1, 2):
        a, b = (load_checkpoint(d / f"cycle{k}" / "train.ckpt") for d in (ref, crash))
        for key in ("net", "optimizer", "ema", "step", "losses"):
            _assert_same_state(a[key], b[key], f"cycle{k}.{key}")
        wa, wb = (load_state_dict(d / f"cycle{k}" / "tiny") for d in (ref, crash))
        _assert_same_state(wa, wb, f"cycle{k} export")
        la, lb = ([json.loads(x) for x in (d / f"cycle{k}" / "train_log.jsonl").read_text()
                   .splitlines()] for d in (ref, crash))  # fmt: skip
        assert [(r["step"], r["loss"], r["lr"]) for r in lb] == [
            (r["step"], r["loss"], r["lr"]) for r in la
        ]


def test_workers_make_the_same_batches(setup):
    tmp, write = setup
    recipe = write("steps = 3")
    inline = _run(recipe, tmp / "w0", tmp / "data", workers=0).losses
    workers = _run(recipe, tmp / "w2", tmp / "data", workers=2).losses
    np.testing.assert_allclose(workers, inline, rtol=1e-5)


def test_install_writes_a_loadable_model(setup):
    from cp2_engine.inference import Model
    from cp2_engine.network import read_metadata

    tmp, write = setup
    recipe = write("steps = 2")
    result = _run(recipe, tmp / "out", tmp / "data", install=True, models_dir=tmp / "models")
    weights = tmp / "models" / "tiny"
    assert result.installed.weights == weights
    assert (tmp / "models" / "tiny_size.npy").is_file()
    meta = read_metadata(weights)
    assert meta["training"]["steps"] == 2 and meta["training"]["seed"] == 3
    assert meta["validation"]["diameter_gt"]["all"]["n"] == 2  # 1 real + 1 synthetic
    assert [d["name"] for d in meta["data"]] == ["real", "synth"]
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    model = Model.load(weights, device="cpu")
    assert model.size_model is not None and model.diam_mean == 17.0
    seg = model.segment(touching_cells((64, 64), n_cells=6, diameter=16, seed=0).image)
    assert seg.masks.shape == (64, 64)
    json.dumps(meta)  # the sidecar is plain JSON


@pytest.mark.parametrize(
    ("edit", "err", "match"),
    [
        (lambda t: t.replace("diam_mean = 17.0\n", ""), ValueError, r"lacks the key.*diam_mean"),
        (lambda t: t.replace('kind = "synthetic"', 'kind = "video"'), ValueError, "'video'"),
        (lambda t: t.replace("toy_val.csv", "nope.csv"), FileNotFoundError, "nope.csv"),
        (
            lambda t: t.replace("checkpoint_seconds", "ema_decy = 1\ncheckpoint_seconds"),
            ValueError,
            "decy",
        ),
        (lambda t: t.replace("{schedule}", "steps = 2\ncycles = [2]"), ValueError, "exactly one"),
        (lambda t: t.replace("{schedule}", "cycles = [2, 0]"), ValueError, "positive"),
        (lambda t: t.replace('"fp32"', '"half"'), ValueError, "precision must be one of"),
        (
            lambda t: t.replace('precision = "fp32"', 'bf16 = false\nprecision = "fp32"'),
            ValueError,
            "'precision' only",
        ),
        (lambda t: t.replace("n_images = 2\n", ""), ValueError, r"#2.*n_images"),
    ],
)
def test_bad_recipes_give_clear_errors(setup, edit, err, match):
    _, write = setup
    text = edit(RECIPE)
    path = write(text=text.replace("{schedule}", "steps = 2"))
    with pytest.raises(err, match=match) as info:
        load_bundled_recipe(path)
    assert "tiny.toml" in str(info.value)


def test_missing_data_folder_names_the_option(setup):
    tmp, write = setup
    with pytest.raises(FileNotFoundError, match="--data"):
        _run(write("steps = 1"), tmp / "out", tmp / "elsewhere")


def test_cli_dispatches_bundled_recipes(setup, capsys):
    from cp2_engine.cli import main

    tmp, write = setup
    recipe = write("cycles = [1, 1]")
    argv = ["train", "--recipe", str(recipe), "--out", str(tmp / "out"), "--data",
            str(tmp / "data"), "--device", "cpu", "--no-progress", "--threads", "1"]  # fmt: skip
    assert main([*argv, "--steps", "2", "1"]) == 0
    assert load_checkpoint(tmp / "out" / "cycle1" / "train.ckpt")["step"] == 2
    assert (tmp / "out" / "cycle2" / "tiny").is_file()
    assert "cycle 2 finished" in capsys.readouterr().out
    assert main([*argv, "--epochs", "3"]) == 2  # folder-training flag: clear error
    assert "--epochs" in capsys.readouterr().err
    assert main(["train", "--images", str(tmp), "--install"]) == 2
    assert "bundled-model recipes" in capsys.readouterr().err


def _script(relpath: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def keep_threads():
    """The scripts set torch's thread count; put it back for the tests that follow."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_wrapper_scripts_train_install_and_evaluate(setup, capsys, keep_threads):
    tmp, write = setup
    recipe = str(write("steps = 1"))
    models = tmp / "models"
    train = _script("scripts/train_bundled.py")
    argv = [recipe, "--out", str(tmp / "out"), "--data", str(tmp / "data"), "--install",
            "--models-dir", str(models), "--threads", "1"]  # fmt: skip
    assert train.main(argv) == 0
    assert (models / "tiny.json").is_file()
    evaluate = _script("benchmarks/eval_bundled.py")
    js = tmp / "ap.json"
    argv = [recipe, "--model", str(models / "tiny"), "--data", str(tmp / "data")]
    assert evaluate.main([*argv, "--json", str(js), "--threads", "1"]) == 0
    assert "| all | 2 |" in capsys.readouterr().out
    assert json.loads(js.read_text())["summary"]["all"]["n"] == 2


def test_time_budget_fixes_the_steps_and_a_resume_keeps_them(setup):
    tmp, write = setup
    recipe = write("cycles = [50]")
    # a budget already spent after the 2 probe steps: the cycle ends there
    result = _run(recipe, tmp / "out", tmp / "data", time_budget=1e-6, probe_steps=2)
    assert result.cycles[0].steps == 2
    assert load_checkpoint(tmp / "out" / "cycle1" / "train.ckpt")["total_steps"] == 2
    again = _run(recipe, tmp / "out", tmp / "data")  # finished: skipped, not extended to 50
    assert again.losses == result.losses


@pytest.mark.parametrize("default_precision", ["fp32", "bf16"])
def test_evaluate_scores_another_precision_against_the_exact_masks(
    setup, monkeypatch, default_precision
):
    from cp2_engine.inference import Model
    from cp2_engine.recipes._install import evaluate

    tmp, write = setup
    recipe = load_bundled_recipe(write("steps = 2"))
    model = Model.load("cp2_nuclei", device="cpu")
    monkeypatch.setenv("CP2_PRECISION", default_precision)
    same = evaluate(model, recipe, data_root=tmp / "data", compare_precision="fp32")
    assert [r["precision_agreement"] for r in same] == [[1.0, 1.0, 1.0]] * 2
    bf16 = evaluate(model, recipe, data_root=tmp / "data", compare_precision="bf16")
    assert all(r["precision_agreement"][0] >= 0.9 for r in bf16)
    assert "precision_agreement" not in evaluate(model, recipe, data_root=tmp / "data")[0]
