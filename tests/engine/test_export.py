"""BioImage.IO export (issue 27): `cp2 export` writes a package that passes bioimageio's own
test for every weight format, comes back through `load_segmenter` with the same network and the
same masks, ships an architecture and a numpy masks script that work without cp2, and a package
that holds no CPnet is refused with a message saying what it holds."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.core")

from cp2_engine.cli import main
from cp2_engine.export import PackageError, export_bioimageio
from cp2_engine.io import imread, read_labels
from cp2_engine.metrics import average_precision, diameters
from cp2_engine.network import CPnet, ModelFileError, save_model
from cp2_engine.segmenters import load_segmenter

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "dsb2018_fluo_nuclei.tif"
EXPORT_SRC = REPO / "src" / "cp2_engine" / "export"


def _import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_model(folder: Path) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        net = CPnet((2, 8, 16, 32), diam_mean=17.0)
    path = folder / "tiny_cp2"
    save_model(net, path, metadata={"description": "tiny random-weights test model"})
    return path


def test_cli_export_passes_bioimageio_test_and_comes_back(tmp_path, capsys):
    weights = _tiny_model(tmp_path)
    out = tmp_path / "tiny.zip"
    argv = ["export", str(weights), "--format", "bioimageio", "--out", str(out),
            "--sample", str(SAMPLE)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
        assert f"bioimageio test {fmt}: passed" in printed, printed

    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert {"rdf.yaml", "weights.pt", "weights_torchscript.pt", "weights.onnx", "cpnet.py",
                "cp2_masks.py", "test_input.npy", "test_output.npy", "cover.png",
                "README.md"} <= names  # fmt: skip
        rdf = zf.read("rdf.yaml").decode()
        assert "format_version: 0.5." in rdf and "scale_range" in rdf
        assert zf.read("cp2_masks.py") == (EXPORT_SRC / "_masks_standalone.py").read_bytes()
        test_in = np.load(io.BytesIO(zf.read("test_input.npy")))
        assert test_in.dtype == np.float32 and test_in.shape[:2] == (1, 2)
        zf.extract("cpnet.py", tmp_path / "pkg")
        state = torch.load(io.BytesIO(zf.read("weights.pt")), weights_only=True)

    # the shipped architecture, imported here as another tool would, computes cp2's function
    standalone = _import_file(tmp_path / "pkg" / "cpnet.py", "pkg_cpnet").CPnet([2, 8, 16, 32])
    standalone.load_state_dict(state, strict=True)
    loaded = load_segmenter(out, device="cpu")
    x = torch.randn(2, 2, 48, 40, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(standalone.eval()(x), loaded.net(x)[0])
    assert CPnet((2, 8, 16, 32)).state_dict().keys() == loaded.net.state_dict().keys()
    source = torch.load(weights, weights_only=True)
    assert all(torch.equal(source[k], v) for k, v in loaded.net.state_dict().items())

    before = hashlib.sha256(out.read_bytes()).hexdigest()
    assert main(argv) == 2  # never clobbers the user's file
    assert "exists" in capsys.readouterr().err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before


def test_bundled_model_round_trip_gives_the_same_masks(tmp_path):
    image = imread(SAMPLE)
    diameter = float(diameters(read_labels(SAMPLE.with_name(SAMPLE.stem + "_masks.tif")))[0])
    out = tmp_path / "nuclei.zip"
    result = export_bioimageio("cp2_nuclei", out, sample=SAMPLE, diameter=diameter, test=False,
                               weight_formats=["pytorch_state_dict"])  # fmt: skip
    assert result.tests == () and result.path == out

    original = load_segmenter("cp2_nuclei", device="cpu")
    loaded = load_segmenter(str(out), device="cpu")
    assert loaded.name == "nuclei" and loaded.size_model is not None
    seg_a = original.segment(image, diameter=diameter)
    seg_b = loaded.segment(image, diameter=diameter)
    assert seg_a.n_masks > 10
    ap = average_precision(seg_a.masks, seg_b.masks, thresholds=(0.5,)).ap[0, 0]
    assert ap == 1.0 and np.array_equal(seg_a.masks, seg_b.masks)
    for key in ("A", "smean", "ymean", "diam_mean"):  # the size model travels as plain JSON
        assert np.array_equal(getattr(loaded.size_model, key), getattr(original.size_model, key))

    with zipfile.ZipFile(out) as zf:
        readme = zf.read("README.md").decode()
        output = np.load(io.BytesIO(zf.read("test_output.npy")))[0]
        cover = imread_png(zf.read("cover.png"))
    assert "dsb2018/fluo_small" in readme and "BBBC038v1" in readme  # validation, attribution
    assert "10.1038/s41592-020-01018-x" in readme and "10.1038/s41592-022-01663-4" in readme
    assert cover.shape[1] == 2 * cover.shape[0]

    # the numpy-only masks script on the package's own test output vs cp2's dynamics on it
    from cp2_engine.postprocess import compute_masks

    script = _import_file(EXPORT_SRC / "_masks_standalone.py", "cp2_masks_script")
    ours = compute_masks(output[:2], output[2], niter=200)
    theirs = script.masks_from_output(output)
    assert ours.max() > 10
    assert average_precision(ours, theirs, thresholds=(0.5,)).ap[0, 0] >= 0.9
    np.save(tmp_path / "output.npy", output[None])  # its command line, as another tool runs it
    assert script.main([str(tmp_path / "output.npy"), str(tmp_path / "masks.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "masks.npy"), theirs)


def imread_png(data: bytes) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(data, extension=".png")


def _package(path: Path, rdf: str, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("rdf.yaml", rdf)
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _state_bytes(state) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def test_packages_without_a_cpnet_are_refused_with_what_they_hold(tmp_path):
    unet = {"enc.conv1.weight": torch.zeros(8, 1, 3, 3), "dec.out.bias": torch.zeros(1)}
    rdf = ("type: model\nname: some unet\nweights:\n  pytorch_state_dict:\n"
           "    source: unet.pt\n    architecture: {callable: UNet2d, source: unet.py}\n"
           "  onnx: {source: unet.onnx}\n")  # fmt: skip
    other = _package(tmp_path / "unet.zip", rdf, {"unet.pt": _state_bytes(unet)})
    with pytest.raises(PackageError, match=r"holds no CPnet.*'UNet2d'.*enc\.conv1\.weight"):
        load_segmenter(other)

    onnx_only = _package(tmp_path / "onnx.zip", "type: model\nweights: {onnx: {source: m.onnx}}",
                         {})  # fmt: skip
    with pytest.raises(ValueError, match=r"no pytorch_state_dict weights.*\['onnx'\]"):
        load_segmenter(onnx_only)

    no_rdf = _package(tmp_path / "plain.zip", "x", {})
    with zipfile.ZipFile(no_rdf, "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(ModelFileError, match=r"no rdf\.yaml"):
        load_segmenter(no_rdf)
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a zip"):
        load_segmenter(tmp_path / "fake.zip")


def test_loading_a_package_never_runs_its_code(tmp_path):
    marker = tmp_path / "code_ran"
    evil = f"open({str(marker)!r}, 'w').write('x')\nclass CPnet: pass\n"
    net = CPnet((2, 8, 16))
    rdf = (
        "type: model\nname: evil package\nweights:\n  pytorch_state_dict:\n"
        "    source: weights.pt\n    architecture: {callable: CPnet, source: cpnet.py}\n"
    )
    files = {"weights.pt": _state_bytes(net.state_dict()), "cpnet.py": evil.encode()}
    pkg = _package(tmp_path / "evil.zip", rdf, files)
    model = load_segmenter(pkg, device="cpu")
    assert model.net.nbase == (2, 8, 16)
    assert not marker.exists()
