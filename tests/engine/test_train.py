"""Tests of the training engine and the flow loss (cp2_engine.training)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cp2_engine.inference import convert_image
from cp2_engine.network import CPnet, build_net_from_state, load_state_dict
from cp2_engine.postprocess import masks_to_flows
from cp2_engine.synthetic import touching_cells
from cp2_engine.training import (
    CheckpointSaved,
    EpochEvent,
    StepEvent,
    TrainConfig,
    TrainStarted,
    checkpoint_path,
    iter_train,
    learning_rate_schedule,
    load_checkpoint,
    train,
)
from cp2_engine.training._losses import FlowLoss, flow_loss

SMALL = (2, 8, 16, 32)


def _data(n=3, *, style="fluorescence", seed=0, shape=(64, 64)):
    cells = [
        touching_cells(shape, n_cells=8, diameter=16, seed=seed + i, style=style) for i in range(n)
    ]
    return [c.image for c in cells], [c.labels for c in cells]


def _small_net(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CPnet(nbase=SMALL, diam_mean=16.0)


def _cfg(**kw):
    base = {
        "n_epochs": 4, "bsize": 32, "batch_size": 3, "min_images_per_epoch": 3, "warmup_epochs": 1,
        "learning_rate": 0.05, "device": "cpu", "save_every": 1, "seed": 3,
    }  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------- loss
def test_flow_loss_values_and_grad():
    rng = np.random.default_rng(0)
    target = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    target[:, 0, 2:6, 2:6] = 1
    target[:, 1:] = torch.from_numpy(rng.normal(size=(2, 2, 8, 8)))
    perfect = torch.cat([5 * target[:, 1:], 100 * (2 * target[:, :1] - 1)], 1)
    assert float(flow_loss(perfect, target)) < 1e-6
    pred = torch.from_numpy(rng.normal(size=(2, 3, 8, 8))).requires_grad_(True)
    expected = ((pred[:, :2] - 5 * target[:, 1:]) ** 2).mean() / 2 + torch.nn.functional.softplus(
        -(2 * target[:, 0] - 1) * pred[:, 2]
    ).mean()
    want = pytest.approx(float(expected.detach()), rel=1e-5)
    assert float(flow_loss(pred, target).detach()) == want
    assert float(FlowLoss()(pred, target).detach()) == want
    flow_loss(pred, target).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_flow_loss_shape_errors():
    with pytest.raises(ValueError, match="Bx3xHxW"):
        flow_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        flow_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        flow_loss(np.zeros((1, 3, 4, 4)), torch.zeros(1, 3, 4, 4))


# ----------------------------------------------------------------------------- config, schedule
def test_config_defaults_follow_the_paper():
    online = TrainConfig().resolved(pretrained=True)
    assert (online.n_epochs, online.learning_rate, online.weight_decay) == (100, 0.1, 1e-4)
    assert (online.momentum, online.batch_size, online.min_images_per_epoch) == (0.9, 8, 8)
    offline = TrainConfig(mode="offline").resolved(pretrained=False)
    assert (offline.n_epochs, offline.learning_rate) == (300, 0.2)
    assert TrainConfig(rescale=False).resolved(pretrained=True).scale_range == 1.0


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "batch"},
        {"bsize": 50},
        {"learning_rate": -1.0},
        {"batch_size": 0},
        {"momentum": 1.0},
        {"n_epochs": 0},
        {"scale_range": 3.0},
        {"channels": (0, 0, 1)},
    ],
)
def test_config_validation(kw):
    with pytest.raises(ValueError):
        TrainConfig(**kw)


def test_learning_rate_schedule():
    off = learning_rate_schedule(TrainConfig(mode="offline", n_epochs=300, learning_rate=0.2))
    np.testing.assert_allclose(off[:10], 0.2 * np.arange(10) / 10)
    np.testing.assert_allclose(off[10:250], 0.2)
    np.testing.assert_allclose(off[250:255], 0.1)
    np.testing.assert_allclose(off[295:], 0.2 / 2**10)
    on = learning_rate_schedule(TrainConfig(mode="online", n_epochs=100, learning_rate=0.1))
    np.testing.assert_allclose(on[10:], 0.1)
    short = learning_rate_schedule(TrainConfig(mode="offline", n_epochs=60, learning_rate=0.1))
    assert short[49] == 0.1 and short[50] == 0.05 and short[59] == pytest.approx(0.1 / 2**10)


# ----------------------------------------------------------------------------- training
def test_loss_decreases_and_events():
    images, labels = _data(3)
    cfg = _cfg(n_epochs=12, warmup_epochs=2, learning_rate=0.1)
    events = []
    gen = iter_train(_small_net(), images, labels, config=cfg)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert isinstance(events[0], TrainStarted) and events[0].n_images == 3
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert [e.epoch for e in epochs] == list(range(12))
    assert all(isinstance(e, StepEvent) for e in events[1:] if not isinstance(e, EpochEvent))
    losses = np.array(result.losses)
    assert losses[-3:].mean() < 0.7 * losses[:2].mean()
    assert result.model_path is None
    assert result.diam_labels == pytest.approx(float(result.net.diam_labels.item()))


def test_files_written_and_diam_labels_saved(tmp_path):
    images, labels = _data(3)
    path = tmp_path / "mymodel"
    res = train(
        _small_net(), images, labels, config=_cfg(n_epochs=2, test_every=1), save_path=path,
        test_images=images[:1], test_labels=labels[:1],
    )  # fmt: skip
    assert res.model_path == path
    assert {p.name for p in tmp_path.iterdir()} == {
        "mymodel", "mymodel.json", "mymodel.ckpt", "mymodel_log.jsonl", "mymodel_loss.png"
    }  # fmt: skip
    lines = [json.loads(x) for x in (tmp_path / "mymodel_log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1] and all(x["test_loss"] for x in lines)
    net = build_net_from_state(load_state_dict(path))
    assert float(net.diam_labels) == pytest.approx(res.diam_labels)
    assert 10 < res.diam_labels < 25
    assert (tmp_path / "mymodel_loss.png").read_bytes()[:4] == b"\x89PNG"


def test_cancel_leaves_last_saved_model_intact(tmp_path):
    images, labels = _data(3)
    path = tmp_path / "m"
    gen = iter_train(_small_net(), images, labels, config=_cfg(save_every=2), save_path=path)
    saved = None
    for ev in gen:
        if isinstance(ev, CheckpointSaved):
            saved = path.read_bytes()
        if saved is not None and isinstance(ev, StepEvent):  # mid-way through epoch 2
            gen.close()
            break
    assert path.read_bytes() == saved
    assert load_checkpoint(checkpoint_path(path))["epoch"] == 1
    build_net_from_state(load_state_dict(path))  # still loadable
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_equals_uninterrupted_run(tmp_path):
    images, labels = _data(3)
    cfg = _cfg(n_epochs=4, save_every=2)
    full = train(_small_net(), images, labels, config=cfg, save_path=tmp_path / "full")
    gen = iter_train(_small_net(), images, labels, config=cfg, save_path=tmp_path / "part")
    for ev in gen:
        if isinstance(ev, CheckpointSaved):
            gen.close()
            break
    ckpt = checkpoint_path(tmp_path / "part")
    assert load_checkpoint(ckpt)["epoch"] == 1
    resumed_gen = iter_train(_small_net(), images, labels, config=cfg, resume_from=ckpt)
    assert next(resumed_gen).start_epoch == 2
    resumed = train(_small_net(), images, labels, config=cfg, resume_from=ckpt)
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-4)
    for (k, a), b in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    log = (tmp_path / "part_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in log] == [0, 1, 2, 3]


def test_images_with_few_rois_are_skipped():
    images, labels = _data(3)
    few = labels[0].copy()
    few[few > 2] = 0
    started = next(iter_train(_small_net(), images, [few, *labels[1:]], config=_cfg()))
    assert (started.n_images, started.n_skipped) == (2, 1)
    res = train(_small_net(), images, [few, *labels[1:]], config=_cfg(n_epochs=1))
    assert res.n_skipped == 1 and res.n_images == 2


@pytest.mark.parametrize(
    ("mutate", "err", "match"),
    [
        (lambda im, lb: (im, [lb[0][:-3], *lb[1:]]), ValueError, "shape"),
        (lambda im, lb: ([], []), ValueError, "non-empty"),
        (lambda im, lb: (im, lb[:2]), ValueError, "3 images but 2"),
        (lambda im, lb: ([np.full_like(im[0], np.nan), *im[1:]], lb), ValueError, "NaN"),
        (lambda im, lb: (im, [np.zeros_like(x) for x in lb]), ValueError, "min_train_masks"),
        (lambda im, lb: (im, [x.astype(float) for x in lb]), ValueError, "integer"),
    ],
)
def test_bad_input_is_rejected(mutate, err, match):
    images, labels = _data(3)
    images, labels = mutate(images, labels)
    with pytest.raises(err, match=match):
        next(iter_train(_small_net(), images, labels, config=_cfg()))


def test_corrupt_checkpoint_is_rejected(tmp_path):
    images, labels = _data(3)
    bad = tmp_path / "m.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt"):
        next(iter_train(_small_net(), images, labels, config=_cfg(), resume_from=bad))
    torch.save({"foo": 1}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a cp2 training checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_bad_model_argument():
    images, labels = _data(1)
    with pytest.raises(TypeError, match="model_or_net"):
        next(iter_train(3.5, images, labels, config=_cfg()))


def test_no_global_rng_side_effects_and_seeded_scratch():
    images, labels = _data(1, shape=(48, 48))
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.random.get_rng_state().clone()
    cfg = _cfg(n_epochs=1, bsize=32, batch_size=1, min_images_per_epoch=1, min_train_masks=1)
    a = train(None, images, labels, config=cfg)
    b = train("scratch", images, labels, config=cfg)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert a.config.learning_rate == 0.05 and a.losses == pytest.approx(b.losses)
    assert TrainConfig().resolved(pretrained=False).learning_rate == 0.2


def test_starting_net_is_not_modified():
    images, labels = _data(3)
    net = _small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = train(net, images, labels, config=_cfg(n_epochs=1))
    assert res.net is not net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def _eval_loss(net, images, labels) -> float:
    net.eval()
    x = torch.from_numpy(np.stack([convert_image(i, normalize=True) for i in images]))
    target = torch.from_numpy(
        np.stack([np.concatenate([(lb > 0)[None], masks_to_flows(lb)]) for lb in labels])
    ).float()
    with torch.no_grad():
        return float(flow_loss(net(x)[0], target))


@pytest.mark.slow
def test_fine_tuned_model_beats_its_start_on_a_new_style():
    fluo_i, fluo_l = _data(4, style="fluorescence", seed=10)
    phase_i, phase_l = _data(4, style="phase", seed=20)
    test_i, test_l = _data(2, style="phase", seed=40)
    base = {"bsize": 48, "batch_size": 4, "min_images_per_epoch": 4, "device": "cpu", "seed": 1}
    pre = train(_small_net(1), fluo_i, fluo_l, config=TrainConfig(
        n_epochs=25, learning_rate=0.1, warmup_epochs=3, **base)).net  # fmt: skip
    # 15 epochs was seed- and layout-luck (test loss ratio 0.27-0.99 over seeds 1-4 and both
    # memory layouts); 30 epochs gives 0.12-0.30 on all of them
    tuned = train(pre, phase_i, phase_l, config=TrainConfig(
        n_epochs=30, learning_rate=0.05, warmup_epochs=2, **base)).net  # fmt: skip
    start_loss = _eval_loss(pre, test_i, test_l)
    tuned_loss = _eval_loss(tuned, test_i, test_l)
    assert tuned_loss < 0.8 * start_loss, (start_loss, tuned_loss)


def test_config_is_recorded_in_checkpoint(tmp_path):
    images, labels = _data(3)
    cfg = _cfg(n_epochs=1)
    train(_small_net(), images, labels, config=cfg, save_path=tmp_path / "m")
    state = load_checkpoint(tmp_path / "m.ckpt")
    assert state["config"] == dataclasses.asdict(cfg.resolved(pretrained=True))
    assert state["epoch"] == 0 and len(state["epoch_losses"]) == 1
    assert len(state["losses"]) == state["step"] > 0  # the loss of every step


def test_size_model_saved_beside_model(tmp_path):
    from cp2_engine.inference import SizeModel
    from cp2_engine.training import train_size_model

    cells = [touching_cells((64, 64), n_cells=6, diameter=d, seed=d) for d in (10, 14, 20, 26)]
    net = _small_net()
    sm = train_size_model(
        net, [c.image for c in cells], [c.labels for c in cells], model_path=tmp_path / "m",
        n_epochs=2, bsize=32,
    )  # fmt: skip
    loaded = SizeModel.load(tmp_path / "m_size.npy")
    np.testing.assert_allclose(loaded.A, sm.A)
    assert loaded.diam_mean == 16.0


def test_cli_train_with_recipe_and_resume(tmp_path):
    import tifffile

    from cp2_engine.cli import main

    images, labels = _data(2)
    for i, (img, lab) in enumerate(zip(images, labels)):
        tifffile.imwrite(tmp_path / f"c{i}_img.tif", img)
        tifffile.imwrite(tmp_path / f"c{i}_masks.tif", lab)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'pretrained = "scratch"\n[train]\nn_epochs = 1\nbsize = 32\nbatch_size = 2\n'
        "min_images_per_epoch = 2\nwarmup_epochs = 0\ndevice = 'cpu'\n"
    )
    argv = ["train", "--images", str(tmp_path), "--recipe", str(recipe), "--name", "m"]
    assert main([*argv, "--no-progress"]) == 0
    ckpt = tmp_path / "models" / "m.ckpt"
    assert load_checkpoint(ckpt)["epoch"] == 0
    assert main([*argv, "--no-progress", "--resume", str(ckpt), "--epochs", "2"]) == 0
    assert load_checkpoint(ckpt)["epoch"] == 1
    recipe.write_text("[train]\nepochs = 3\n")
    assert main([*argv, "--no-progress"]) == 2  # unknown key -> clear error, exit status 2


def test_an_old_epoch_checkpoint_is_refused_naming_the_file_and_what_to_do(tmp_path, capsys):
    """A checkpoint of the epoch trainer before the one step driver (version 1) is not resumed:
    the same command fails naming the file and --restart, which then trains from the start."""
    import tifffile

    from cp2_engine.cli import main

    images, labels = _data(2)
    for i, (img, lab) in enumerate(zip(images, labels)):
        tifffile.imwrite(tmp_path / f"c{i}_img.tif", img)
        tifffile.imwrite(tmp_path / f"c{i}_masks.tif", lab)
    argv = ["train", "--images", str(tmp_path), "--name", "m", "--epochs", "2", "--bsize", "32",
            "--batch-size", "2", "--device", "cpu", "--no-progress"]  # fmt: skip
    ckpt = tmp_path / "models" / "m.ckpt"
    ckpt.parent.mkdir()
    net = _small_net()
    torch.save({"format": "cp2-train-checkpoint", "version": 1, "epoch": 0, "losses": [1.0],
                "test_losses": [], "n_images": 2, "diam_labels": 16.0, "net": net.state_dict(),
                "optimizer": {}, "scaler": {}, "config": {}}, ckpt)  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "older cp2" in err and "--restart" in err
    with pytest.raises(ValueError, match="older cp2"):
        train(_small_net(), images, labels, config=_cfg(), resume_from=ckpt)
    assert main([*argv, "--restart"]) == 0
    assert load_checkpoint(ckpt)["epoch"] == 1


def test_cli_flags_reach_the_training_config(caplog):
    import argparse

    from cp2_engine.cli import _train as train_cmd

    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    plain = train_cmd._build_config(parser.parse_args([]), {})
    assert (plain.precision, plain.channels_last) == ("auto", None)  # decided per device
    fast = train_cmd._build_config(parser.parse_args(["--precision", "bf16", "--channels-last"]),
                                   {})  # fmt: skip
    assert (fast.precision, fast.channels_last) == ("bf16", True)
    with caplog.at_level("WARNING"):  # the old flags and recipe keys still work, deprecated
        assert train_cmd._build_config(parser.parse_args(["--no-bf16"]), {}).precision == "fp32"
        from_recipe = train_cmd._build_config(parser.parse_args([]), {"bf16": True, "amp": True})
    assert from_recipe.precision == "bf16"
    assert "--bf16/--no-bf16 are deprecated" in caplog.text
    assert "read as precision='bf16'" in caplog.text
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="half")


@pytest.mark.parametrize(("capability", "layout_cl"), [("AVX512", True), ("AVX2", False)])
def test_cpu_training_layout_follows_the_measured_rule(monkeypatch, capability, layout_cl):
    # channels-last trains ~8 % faster with AVX-512 but 1.15x slower than NCHW with AVX2 only
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    images, labels = _data(3)
    default = train(_small_net(), images, labels, config=_cfg(n_epochs=2))
    same = train(_small_net(), images, labels, config=_cfg(n_epochs=2, channels_last=layout_cl))
    flipped = _cfg(n_epochs=2, channels_last=not layout_cl)
    other = train(_small_net(), images, labels, config=flipped)
    kernel = next(p for p in default.net.parameters() if p.ndim == 4)
    assert kernel.is_contiguous(memory_format=torch.channels_last) == layout_cl
    assert kernel.is_contiguous() != layout_cl
    np.testing.assert_array_equal(default.losses, same.losses)
    np.testing.assert_allclose(default.losses, other.losses, rtol=1e-3)


def test_inference_keeps_channels_last_on_every_cpu(monkeypatch):
    from cp2_engine.network import use_channels_last

    for capability in ("AVX2", "AVX512", "DEFAULT"):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert use_channels_last(None, torch.device("cpu"))
        cl_training = use_channels_last(None, torch.device("cpu"), training=True)
        assert cl_training == capability.startswith("AVX512"), capability


def test_training_precision_is_the_one_policy(monkeypatch):
    """Training asks cp2_engine.network.resolve_precision: bf16 by default only on a CPU with
    native bf16; no gradient scaler outside fp16 on CUDA; fp16 off CUDA is refused."""
    from cp2_engine.network import _device
    from cp2_engine.training import TrainState

    monkeypatch.delenv("CP2_PRECISION", raising=False)  # the suite pins fp32 (conftest.py)
    for native in (True, False):
        monkeypatch.setattr(_device, "cpu_has_native_bf16", lambda native=native: native)
        state = TrainState.create(_small_net(), precision="auto", learning_rate=0.1)
        assert state.precision == ("bf16" if native else "fp32")
        assert not state.scaler.is_enabled()
    with pytest.raises(ValueError, match="fp16"):
        train(_small_net(), *_data(3), config=_cfg(n_epochs=1, precision="fp16"))
    monkeypatch.setattr(_device, "cpu_has_native_bf16", lambda: True)
    images, labels = _data(3)
    auto = train(_small_net(), images, labels, config=_cfg(n_epochs=2))
    forced = train(_small_net(), images, labels, config=_cfg(n_epochs=2, precision="bf16"))
    fp32 = train(_small_net(), images, labels, config=_cfg(n_epochs=2, precision="fp32"))
    np.testing.assert_array_equal(auto.losses, forced.losses)
    assert not np.array_equal(auto.losses, fp32.losses)  # autocast really ran in bf16
    np.testing.assert_allclose(auto.losses, fp32.losses, rtol=0.05)
