"""The bundled models: they load offline, match their sidecar, and segment held-out images.

The AP@0.5 floors below sit 0.1 under the values measured on the sample images (measured: 0.778
for cp2_nuclei, 0.500 for cp2_cyto; the samples are cut from images in the validation
split, so never trained on) when the models were installed; a random-weights model scores far
below them, which the ``untrained`` test checks.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cp2_engine.inference import Model
from cp2_engine.metrics import average_precision
from cp2_engine.network import (
    bundled_dir,
    find_model,
    load_state_dict,
    read_metadata,
    sha256_file,
    verify_sha256,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_data"
MAX_BYTES = 30 * 1024 * 1024

# name -> (sample image stem, channels, annotated median diameter, AP@0.5 floor)
CASES = {
    "cp2_nuclei": ("dsb2018_fluo_nuclei", (0, 0), 17.95, 0.65),
    "cp2_cyto": ("usiigaci_phase_3t3", (0, 0), 38.3, 0.40),
}
NAMES = sorted(CASES)


def _require(name: str) -> Path:
    path = bundled_dir() / name
    if not path.is_file():
        pytest.fail(f"bundled model {name} is missing from {bundled_dir()}")
    return path


def _sample(stem: str) -> tuple[np.ndarray, np.ndarray]:
    return tifffile.imread(SAMPLES / f"{stem}.tif"), tifffile.imread(SAMPLES / f"{stem}_masks.tif")


def _ap50(model: Model, name: str, *, diameter) -> float:
    stem, channels, _, _ = CASES[name]
    image, labels = _sample(stem)
    seg = model.segment(image, channels=channels, diameter=diameter)
    return float(average_precision(labels, seg.masks, thresholds=(0.5,)).ap[0, 0])


@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_is_found_small_and_matches_its_sidecar(name):
    path = _require(name)
    spec = find_model(name)
    assert spec.source == "bundled"
    assert spec.size_model is not None and spec.size_model.is_file()
    assert path.stat().st_size <= MAX_BYTES
    meta = read_metadata(path)
    assert verify_sha256(path)
    assert meta["sha256"] == sha256_file(path)
    for key in ("data", "recipe", "training", "validation", "license", "channels"):
        assert key in meta, key
    assert meta["training"]["steps"] > 0 and "seed" in meta["training"]
    assert (REPO / meta["recipe"]).is_file()
    _check_recorded_validation(name, meta["validation"])


def _check_recorded_validation(name: str, recorded: dict) -> None:
    """The sidecar's validation numbers agree with the published record in docs/validation.

    The sidecar is written when the model is installed, the record by
    ``benchmarks/validation_tables.py`` (the tables in docs/bundled_models.md); both evaluate the
    same validation split with the annotated diameter, so AP@0.5 agrees within 0.01 (the record
    may be re-measured on another commit). Every group also has AP@0.9 <= AP@0.75 <= AP@0.5, and
    the whole split scores above the sample floor.
    """
    published = json.loads((REPO / "docs" / "validation" / f"{name}.json").read_text())
    mine, theirs = recorded["diameter_gt"]["all"], published["summary_gt"]["all"]
    assert mine["n"] == theirs["n"]
    assert mine["ap50"] == pytest.approx(theirs["ap50"], abs=0.01)
    assert mine["ap50"] > CASES[name][3]
    for group, ap in recorded["diameter_gt"].items():
        assert ap["ap90"] <= ap["ap75"] <= ap["ap50"], group


@pytest.mark.parametrize("name", NAMES)
def test_float16_file_loads_as_float32_net(name):
    state = load_state_dict(_require(name))
    assert state["output.2.weight"].dtype == torch.float16
    model = Model.load(name, device="cpu")
    assert all(p.dtype == torch.float32 for p in model.net.parameters())
    expected = 17.0 if name == "cp2_nuclei" else 30.0
    assert model.diam_mean == pytest.approx(expected)


@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_segments_a_held_out_sample(name):
    _require(name)
    _, _, diameter, floor = CASES[name]
    model = Model.load(name, device="cpu")
    assert _ap50(model, name, diameter=diameter) >= floor


@pytest.mark.parametrize("name", NAMES)
def test_size_model_estimate_is_usable(name):
    _require(name)
    stem, channels, diameter, _ = CASES[name]
    model = Model.load(name, device="cpu")
    estimate = model.estimate_diameter(_sample(stem)[0], channels=channels)
    assert diameter / 1.5 <= estimate <= diameter * 1.5


@pytest.mark.parametrize("name", NAMES)
def test_untrained_model_cannot_pass_the_floor(name):
    _, _, diameter, floor = CASES[name]
    diam_mean = 17.0 if name == "cp2_nuclei" else 30.0
    model = Model.random(seed=0, diam_mean=diam_mean)
    assert _ap50(model, name, diameter=diameter) < floor / 2


_PARITY_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from cellpose.resnet_torch import CPnet

    path, folder = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    net = CPnet(nbase=[2, 32, 64, 128, 256], nout=3, sz=3)
    net.load_state_dict(torch.load(path, weights_only=True), strict=True)
    net.eval()
    with torch.no_grad():
        y = net(torch.from_numpy(np.load(folder + "/x.npy")))[0]
    np.save(folder + "/y.npy", y.numpy())
    print(float(net.diam_mean[0]))
    """
)


@pytest.mark.parity
@pytest.mark.parametrize("name", NAMES)
def test_reference_cellpose_loads_the_float16_file(name, tmp_path, cellpose_python):
    path = _require(name)
    x = np.random.default_rng(0).normal(size=(1, 2, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "ref.py"
    script.write_text(_PARITY_SCRIPT)
    done = subprocess.run(
        [cellpose_python, str(script), str(path), str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    model = Model.load(name, device="cpu")
    with torch.no_grad():
        ours = model.net(torch.from_numpy(x))[0].numpy()
    assert float(done.stdout.split()[-1]) == pytest.approx(model.diam_mean)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ours, atol=1e-4, rtol=1e-4)


def test_diameter_estimate_recovers_from_a_bad_size_model_guess():
    """On the stained-tissue sample the size model alone says 8.3 px for nuclei of 23.5 px, and
    one re-measurement at that scale gave 13.5 px (AP@0.5 0.28). Iterating the re-measurement
    from two starts lands within 15% of the annotated diameter."""
    from cp2_engine.metrics import diameters

    model = Model.load("cp2_nuclei", device="cpu")
    image = tifffile.imread(SAMPLES / "dsb2018_tissue_rgb.tif")
    truth = tifffile.imread(SAMPLES / "dsb2018_tissue_rgb_masks.tif")
    estimate = model.estimate_diameter(image)
    assert abs(np.log(estimate / diameters(truth)[0])) < np.log(1.15), estimate
