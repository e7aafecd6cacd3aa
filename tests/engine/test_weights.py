"""Tests of model-file loading (strict, SAM refusal, corrupt files) and saving with a sidecar."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cp2_engine.network import (
    CPnet,
    ModelFileError,
    build_net_from_state,
    infer_architecture,
    load_state_dict,
    read_metadata,
    save_model,
    sha256_file,
    verify_sha256,
)


def _random_net(seed: int, **kwargs) -> CPnet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CPnet(**kwargs)
    gen = torch.Generator().manual_seed(seed)
    for name, buf in net.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "my_model"
    net = _random_net(0)
    net.diam_labels.fill_(23.5)
    save_model(net, path, metadata={"channels": [2, 1], "training": {"n_epochs": 7}})
    return net, path


def test_round_trip_is_identical(saved):
    net, path = saved
    state = load_state_dict(path)
    reference = net.state_dict()
    assert list(state) == list(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    rebuilt = build_net_from_state(state).eval()
    x = torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(rebuilt(x)[0], net(x)[0])
    assert rebuilt.diam_labels.item() == 23.5


def test_plain_torch_file_is_a_bare_state_dict(saved):
    _, path = saved
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict) and len(raw) == 313


def test_sidecar_contents(saved):
    _, path = saved
    meta = read_metadata(path)
    assert meta["channels"] == [2, 1]
    assert meta["training"] == {"n_epochs": 7}
    assert meta["diam_mean"] == 30.0 and meta["diam_labels"] == 23.5
    assert meta["nbase"] == [2, 32, 64, 128, 256] and meta["nout"] == 3
    assert meta["sha256"] == sha256_file(path)
    assert meta["cp2_version"] and meta["created"]
    assert verify_sha256(path) is True


def test_verify_sha256_detects_modification(tmp_path):
    path = tmp_path / "m"
    save_model(_random_net(1, nbase=(2, 8, 16)), path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        verify_sha256(path)


def test_no_sidecar(tmp_path):
    path = tmp_path / "cyto2torch_0"
    torch.save(_random_net(2, nbase=(2, 8, 16)).state_dict(), path)
    assert read_metadata(path) is None
    assert verify_sha256(path) is False
    assert len(load_state_dict(path)) > 0


def test_reserved_metadata_and_unserialisable(tmp_path):
    net = _random_net(3, nbase=(2, 8, 16))
    with pytest.raises(ValueError, match="reserved"):
        save_model(net, tmp_path / "m", metadata={"sha256": "x"})
    with pytest.raises(TypeError, match="JSON"):
        save_model(net, tmp_path / "m", metadata={"bad": object()})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        save_model(net, tmp_path / "nofolder" / "m")


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = _random_net(4).state_dict()
    del state["upsample.up.res_up_1.conv.conv_2.full.bias"]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad"
    torch.save(state, path)
    with pytest.raises(ModelFileError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "upsample.up.res_up_1.conv.conv_2.full.bias" in message
    assert "extra.weight" in message


def test_shape_mismatch_is_listed(tmp_path):
    state = _random_net(5).state_dict()
    state["upsample.up.res_up_2.conv.conv_1.full.weight"] = torch.zeros(128, 64)
    path = tmp_path / "bad"
    torch.save(state, path)
    with pytest.raises(ModelFileError, match=r"res_up_2\.conv\.conv_1\.full\.weight"):
        load_state_dict(path)


def test_cellpose1_file_without_diameters(tmp_path, caplog):
    state = _random_net(6).state_dict()
    del state["diam_mean"], state["diam_labels"]
    path = tmp_path / "old"
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="cp2_engine.network._weights"):
        loaded = load_state_dict(path)
    assert loaded["diam_mean"].item() == 30.0 and loaded["diam_labels"].item() == 30.0
    assert "diam_mean" in caplog.text
    assert build_net_from_state(loaded).diam_mean.item() == 30.0


@pytest.mark.parametrize("key", ["W2", "encoder.patch_embed.proj.weight"])
def test_sam_file_refused(tmp_path, key):
    path = tmp_path / "cpsam"
    torch.save({key: torch.zeros(2, 2), "out.weight": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="Cellpose-4"):
        load_state_dict(path)


def test_corrupt_and_foreign_files(tmp_path):
    rng = np.random.default_rng(7)
    junk = tmp_path / "junk"
    junk.write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    good = tmp_path / "good"
    save_model(_random_net(7, nbase=(2, 8, 16)), good)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(good.read_bytes()[:5000])
    not_a_dict = tmp_path / "tensor"
    torch.save(torch.zeros(3), not_a_dict)
    for path in (junk, truncated):
        with pytest.raises(ModelFileError, match=r"not a .*torch weights file"):
            load_state_dict(path)
    with pytest.raises(ModelFileError, match="state_dict"):
        load_state_dict(not_a_dict)
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / "absent")


def test_infer_architecture_nonstandard(tmp_path):
    path = tmp_path / "small"
    save_model(_random_net(8, nbase=(1, 8, 16, 32), nout=4), path)
    state = load_state_dict(path)
    assert infer_architecture(state) == {"nbase": (1, 8, 16, 32), "nout": 4, "sz": 3}
    assert build_net_from_state(state).nchan == 1
    with pytest.raises(ModelFileError, match="not a CPnet"):
        infer_architecture({"foo": torch.zeros(1)})
