"""Parity of cp2's CPnet with the reference Cellpose CPnet (run in its own venv).

Weights go both ways: a cp2 file is loaded by Cellpose with ``strict=True`` and a file written
by Cellpose is loaded by cp2's strict loader; both nets then run the same input in eval mode.
"""

from __future__ import annotations

import subprocess
import textwrap

import numpy as np
import pytest
import torch

from cp2_engine.network import CPnet, build_net_from_state, load_state_dict, save_model

_REFERENCE_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from cellpose.resnet_torch import CPnet

    folder = sys.argv[1]
    torch.set_num_threads(1)
    x = torch.from_numpy(np.load(folder + "/x.npy"))

    def run(net, tag):
        net.eval()
        with torch.no_grad():
            out = net(x)
        np.save(folder + f"/{tag}_y.npy", out[0].numpy())
        np.save(folder + f"/{tag}_style.npy", out[1].numpy())

    net = CPnet(nbase=[2, 32, 64, 128, 256], nout=3, sz=3)
    net.load_state_dict(torch.load(folder + "/cp2_model", weights_only=True), strict=True)
    run(net, "cellpose_on_cp2")

    torch.manual_seed(1)
    own = CPnet(nbase=[2, 32, 64, 128, 256], nout=3, sz=3, diam_mean=17.0)
    gen = torch.Generator().manual_seed(2)
    for name, buf in own.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=gen) * 0.2)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
    torch.save(own.state_dict(), folder + "/cellpose_model")
    run(own, "cellpose_own")
    """
)


def _perturbed_net(seed: int) -> CPnet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CPnet()
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.2)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
        for name, param in net.named_parameters():
            if name.endswith(".bias") and param.requires_grad:
                param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    return net.eval()


def _max_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


@pytest.mark.parity
def test_weights_and_outputs_match_cellpose(tmp_path, cellpose_python):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 2, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    net = _perturbed_net(0)
    save_model(net, tmp_path / "cp2_model")
    script = tmp_path / "reference.py"
    script.write_text(_REFERENCE_SCRIPT)
    result = subprocess.run(
        [cellpose_python, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]

    with torch.no_grad():
        y, style = net(torch.from_numpy(x))
    assert _max_err(np.load(tmp_path / "cellpose_on_cp2_y.npy"), y.numpy()) < 1e-4
    assert _max_err(np.load(tmp_path / "cellpose_on_cp2_style.npy"), style.numpy()) < 1e-5
    assert np.abs(y.numpy()).max() > 0.1  # the comparison is not between two zero fields

    theirs = build_net_from_state(load_state_dict(tmp_path / "cellpose_model")).eval()
    assert theirs.diam_mean.item() == 17.0
    with torch.no_grad():
        y2, style2 = theirs(torch.from_numpy(x))
    assert _max_err(np.load(tmp_path / "cellpose_own_y.npy"), y2.numpy()) < 1e-4
    assert _max_err(np.load(tmp_path / "cellpose_own_style.npy"), style2.numpy()) < 1e-5
