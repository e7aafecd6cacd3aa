"""CUDA paths agree with the CPU paths (run with ``pytest -m gpu`` on a machine with a GPU).

Skipped where no CUDA device is present (CI). Each test compares the GPU result with the CPU
result of the same code on the same seeded data.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cp2_engine.inference import Model
from cp2_engine.metrics import average_precision
from cp2_engine.network import CPnet
from cp2_engine.postprocess import masks_to_flows
from cp2_engine.synthetic import touching_cells
from cp2_engine.training import TrainConfig, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def _exact_float32():
    """No TF32 in convolutions or matmuls, so GPU fp32 is comparable with the CPU."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flows_on_cuda_match_the_cpu_numba_path(seed):
    labels = touching_cells((160, 160), diameter=20, seed=seed).labels
    cpu = masks_to_flows(labels)
    gpu = masks_to_flows(labels, device=torch.device("cuda"))
    np.testing.assert_allclose(gpu, cpu, atol=1e-4, rtol=0)


def test_network_forward_on_cuda_matches_the_cpu():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = CPnet().eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 2, 224, 224), np.float32))
    with torch.no_grad():
        y_cpu, style_cpu = net(x)[:2]
        net_gpu = net.to("cuda")
        y_gpu, style_gpu = (t.cpu() for t in net_gpu(x.to("cuda"))[:2])
    np.testing.assert_allclose(y_gpu.numpy(), y_cpu.numpy(), atol=2e-3, rtol=0)
    np.testing.assert_allclose(style_gpu.numpy(), style_cpu.numpy(), atol=1e-4, rtol=0)


def test_segmenting_on_cuda_gives_the_cpu_masks():
    sample = touching_cells((384, 384), diameter=17, seed=4, style="fluorescence")
    kwargs = {"diameter": 17.0, "channels": (0, 0)}
    cpu = Model.load("cp2_nuclei", device="cpu").segment(sample.image, **kwargs)
    gpu = Model.load("cp2_nuclei", device="cuda").segment(sample.image, **kwargs)
    assert cpu.masks.max() > 50
    assert average_precision(cpu.masks, gpu.masks, thresholds=(0.5,)).ap[0, 0] >= 0.99
    assert average_precision(sample.labels, gpu.masks, thresholds=(0.5,)).ap[0, 0] >= 0.8


@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16"])
def test_training_on_cuda_with_mixed_precision_lowers_the_loss(precision):
    """Every CUDA precision trains (fp16 through the gradient scaler, bf16 without one)."""
    from cp2_engine.training import TrainState

    state = TrainState.create(Model.random(seed=0).net, device="cuda", precision=precision,
                              learning_rate=0.1)  # fmt: skip
    assert state.scaler.is_enabled() == (state.precision == "fp16")
    made = [touching_cells((192, 192), diameter=24, seed=s) for s in range(8)]
    config = TrainConfig(
        n_epochs=12, learning_rate=0.2, warmup_epochs=2, device="cuda", precision=precision,
        seed=0, save_every=10**6,
    )  # fmt: skip
    result = train(
        Model.random(seed=0, device="cuda").net,
        [m.image for m in made],
        [m.labels for m in made],
        config=config,
    )
    losses = result.losses
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
