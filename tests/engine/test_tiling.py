"""Tests of tile placement, padding/cropping, blending and flip augmentation."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from cp2_engine.inference import make_tile_grid, run_tiled
from cp2_engine.inference._tiling import taper_mask
from cp2_engine.network import CPnet


class _ConvNet(nn.Module):
    """A fixed 3x3 convolution: ch0 = d/dy, ch1 = d/dx (flip-antisymmetric), ch2 = 2 * x0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        w = torch.zeros(3, 2, 3, 3)
        w[0, 0, 2, 1], w[0, 0, 0, 1] = 1.0, -1.0
        w[1, 0, 1, 2], w[1, 0, 1, 0] = 1.0, -1.0
        w[2, 0, 1, 1] = 2.0
        self.conv.weight.data = w
        self.nchan = 2

    def forward(self, x):
        return self.conv(x), torch.ones(x.shape[0], 4) / 2.0


def _direct(net, x):
    with torch.no_grad():
        return net.conv(torch.from_numpy(x)[None])[0].numpy()


def test_grid_covers_image_with_cellpose_tile_counts():
    grid = make_tile_grid((2064, 2064))  # a 2048^2 image after padding
    assert grid.n_tiles == 144 and grid.tile == (224, 224)
    assert grid.ystarts[0] == 0 and grid.ystarts[-1] == 2064 - 224
    assert max(np.diff(grid.ystarts)) <= 224 * 0.9
    small = make_tile_grid((144, 96))
    assert small.tile == (144, 96) and small.n_tiles == 1
    aug = make_tile_grid((240, 240), augment=True)
    assert aug.n_tiles == 9


def test_taper_mask_is_symmetric_and_peaks_in_centre():
    m = taper_mask(224, 224)
    np.testing.assert_allclose(m, m[::-1, ::-1], rtol=1e-6)
    assert m.max() == pytest.approx(1.0, abs=1e-4) and m[0, 0] < 0.01
    assert taper_mask(100, 60).shape == (100, 60)


@pytest.mark.parametrize("shape", [(40, 50), (300, 260)])
def test_blending_reproduces_a_pointwise_net(rng, shape):
    net = _ConvNet().eval()
    x = rng.random((2, *shape)).astype(np.float32)
    y, style = run_tiled(net, x, batch_size=3)
    assert y.shape == (3, *shape)
    expected = _direct(net, x)
    np.testing.assert_allclose(y[2], expected[2], atol=1e-5)  # exact for a 1x1 term
    inner = (slice(1, -1), slice(1, -1))  # conv zero-padding at tile edges adds small errors
    err = np.abs(y[:2][(slice(None), *inner)] - expected[:2][(slice(None), *inner)])
    assert err.mean() < 0.005 and err.max() < 0.1
    np.testing.assert_allclose(style, np.full(4, 0.5), atol=1e-6)


def test_augment_flips_back_and_fixes_flow_signs(rng):
    net = _ConvNet().eval()
    x = rng.random((2, 260, 230)).astype(np.float32)
    y, _ = run_tiled(net, x, augment=True)
    expected = _direct(net, x)
    inner = (slice(1, -1), slice(1, -1))
    for c in range(3):
        err = np.abs(y[c][inner] - expected[c][inner])
        assert err.mean() < 0.01, (c, err.mean())


def test_single_tile_equals_direct_forward_on_padded_image(rng):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = CPnet().eval()
    x = rng.random((2, 50, 70)).astype(np.float32)
    y, style = run_tiled(net, x)
    padded = np.pad(x, ((0, 0), (15, 15), (13, 13)))  # 80 x 96: multiple of 16 plus 8 per side
    with torch.inference_mode():
        ref, ref_style = net(torch.from_numpy(padded)[None])
    np.testing.assert_allclose(y, ref[0, :, 15:65, 13:83].numpy(), atol=1e-4)
    np.testing.assert_allclose(style, ref_style[0].numpy(), atol=1e-5)


def test_rejects_bad_input():
    net = _ConvNet().eval()
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        run_tiled(net, np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        run_tiled(net, np.full((2, 10, 10), np.inf, np.float32))


_THREAD_FAULTS = """
import resource, threading, time
import numpy as np, torch
from cp2_engine.network._net import CPnet
from cp2_engine.inference._tiling import run_tiled
from cp2_engine.util import tune_allocator

stop = threading.Event()

def other():  # a thread that already has its own malloc arena (as Qt's threads do)
    while not stop.is_set():
        np.ones((500, 500)).sum()
        time.sleep(0.005)

threading.Thread(target=other, daemon=True).start()
time.sleep(0.2)
tune_allocator()
net, x, out = CPnet().eval(), np.random.default_rng(0).random((2, 224, 1792), np.float32), []

def job():
    run_tiled(net, x, precision="fp32", backend="torch")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run_tiled(net, x, precision="fp32", backend="torch")
    out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

worker = threading.Thread(target=job)
worker.start()
worker.join()
stop.set()
print(out[0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator")
def test_network_buffers_are_reused_in_a_thread_started_after_tuning():
    # glibc gave the napari plugin's worker threads their own arenas (heaps of at most 64 MB),
    # where the network's large buffers were mapped and unmapped at every pass: ~225,000
    # page faults per pass here, about 8% of the time
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "CP2_NO_ALLOC"))}
    run = subprocess.run(
        [sys.executable, "-c", _THREAD_FAULTS], capture_output=True, text=True, env=env, check=True
    )
    # measured: 226,000-257,000 faults without M_ARENA_MAX=1, 12,500-50,000 with it
    assert int(run.stdout.split()[-1]) < 120_000
