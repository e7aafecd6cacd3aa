"""Tests of the CPnet architecture: weight-file grammar, shapes, style, fast inference path."""

from __future__ import annotations

import pytest
import torch

from cp2_engine.network import CPnet, get_runner


def _seeded_net(seed: int, *args, **kwargs) -> CPnet:
    """Build a CPnet with seeded init without touching the caller's global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CPnet(*args, **kwargs).eval()


@pytest.fixture(scope="module")
def net() -> CPnet:
    return _seeded_net(0)


def _input(seed: int, shape=(2, 2, 32, 32)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen)


def test_state_dict_grammar(net):
    state = net.state_dict()
    assert len(state) == 313
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["diam_mean"] == (1,)
    assert shapes["diam_labels"] == (1,)
    assert shapes["downsample.down.res_down_0.conv.conv_0.0.weight"] == (2,)
    assert shapes["downsample.down.res_down_0.conv.conv_0.2.weight"] == (32, 2, 3, 3)
    assert shapes["downsample.down.res_down_3.proj.1.weight"] == (256, 128, 1, 1)
    assert shapes["downsample.down.res_down_2.conv.conv_3.0.num_batches_tracked"] == ()
    assert shapes["upsample.up.res_up_0.conv.conv_0.2.weight"] == (32, 64, 3, 3)
    assert shapes["upsample.up.res_up_3.conv.conv_2.full.weight"] == (256, 256)
    assert shapes["upsample.up.res_up_1.conv.conv_1.conv.2.weight"] == (64, 64, 3, 3)
    assert shapes["upsample.up.res_up_2.proj.1.weight"] == (128, 256, 1, 1)
    assert shapes["output.0.running_var"] == (32,)
    assert shapes["output.2.weight"] == (3, 32, 1, 1)
    n_bn = sum(k.endswith("num_batches_tracked") for k in state)
    assert n_bn == 4 * 5 + 4 * 5 + 1


def test_parameter_count_and_diameters(net):
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == 6_600_843
    assert not net.diam_mean.requires_grad and not net.diam_labels.requires_grad
    assert net.diam_mean.item() == 30.0
    assert CPnet(diam_mean=17.0).diam_labels.item() == 17.0


def test_batchnorm_momentum_default():
    bns = [m for m in CPnet().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 41
    assert {m.momentum for m in bns} == {0.05}
    assert {m.momentum for m in CPnet(bn_momentum=0.1).modules() if hasattr(m, "momentum")} == {
        0.1
    }


def test_forward_shapes_and_unit_style(net):
    x = _input(1, (3, 2, 48, 64))
    with torch.no_grad():
        y, style = net(x)
    assert y.shape == (3, 3, 48, 64)
    assert style.shape == (3, 256)
    assert torch.allclose(style.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.isfinite(y).all()


def test_style_is_normalised_mean_of_bottleneck(net):
    x = _input(2)
    with torch.no_grad():
        bottleneck = net.downsample(x)[-1]
        _, style = net(x)
    pooled = bottleneck.mean(dim=(2, 3))
    assert torch.allclose(style, pooled / pooled.norm(dim=1, keepdim=True), atol=1e-6)


def test_style_changes_decoder_output(net):
    x = _input(3, (1, 2, 32, 32))
    with torch.no_grad():
        features = net.downsample(x)
        style = net.make_style(features[-1])
        y1 = net.upsample(style, features)
        y2 = net.upsample(-style, features)
    assert not torch.allclose(y1, y2)


def test_nonstandard_widths():
    net = _seeded_net(3, (1, 8, 16), nout=4, sz=5)
    with torch.no_grad():
        y, style = net(_input(4, (1, 1, 16, 16)))
    assert y.shape == (1, 4, 16, 16)
    assert style.shape == (1, 16)


def test_bad_input_and_arguments(net):
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="odd kernel"):
        CPnet(sz=4)
    with pytest.raises(ValueError, match="nbase"):
        CPnet((2,))


def test_backward_reaches_all_trainable_parameters():
    net = _seeded_net(1, (2, 8, 16, 32)).train()
    y, _ = net(_input(5, (2, 2, 16, 16)))
    y.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_torch_runner_fp32_matches_plain(net):
    x = _input(6)
    with torch.no_grad():
        y_ref, s_ref = net(x)
    y, s = get_runner(net, precision="fp32", backend="torch", channels_last=False)(x)
    assert torch.equal(y, y_ref) and torch.equal(s, s_ref)


def test_torch_runner_channels_last_and_bf16():
    net = _seeded_net(2)
    x = _input(7)
    with torch.no_grad():
        y_ref, s_ref = net(x)
    y_cl, s_cl = get_runner(net, precision="fp32", backend="torch", channels_last=True)(x)
    assert net.output[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y_cl, y_ref, atol=1e-4)
    assert torch.allclose(s_cl, s_ref, atol=1e-5)
    y_bf, s_bf = get_runner(net, precision="bf16", backend="torch")(x)
    assert y_bf.dtype == torch.float32 and s_bf.dtype == torch.float32
    scale = y_ref.abs().max()
    assert (y_bf - y_ref).abs().max() < 0.1 * scale
    assert (s_bf - s_ref).abs().max() < 0.05
