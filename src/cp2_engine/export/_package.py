"""Export a cp2 model as a BioImage.IO model package (``.zip``) and test it with
``bioimageio.core``: a generator of progress events, and a function that drains it."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cp2_engine.export import _artifacts as art
from cp2_engine.export._describe import PackageFiles, build_description
from cp2_engine.export._readme import PackageInfo, readme_text
from cp2_engine.inference import Model, convert_image, fit_channels
from cp2_engine.network import build_net_from_state
from cp2_engine.util import ProgressEvent, atomic_write_file, drain

__all__ = [
    "WEIGHT_FORMATS",
    "ExportProgress",
    "ExportResult",
    "FormatTest",
    "export_bioimageio",
    "iter_export_bioimageio",
    "test_package",
]

logger = logging.getLogger(__name__)

#: The weight formats cp2 writes, in the order BioImage.IO tools should prefer them.
WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
_TAGS = ("cellpose", "cp2", "instance-segmentation", "segmentation", "2d", "pytorch", "cells")


@dataclass(frozen=True)
class ExportProgress(ProgressEvent):
    """One step of an export: ``stage`` is starting, ``done`` of ``total`` steps are over.

    Examples
    --------
    >>> ExportProgress.of("cover", 1, 4)
    ExportProgress(done=1, total=4, message='cover…', stage='cover')
    """

    stage: str

    @classmethod
    def of(cls, stage: str, done: int, total: int) -> ExportProgress:
        """The event of ``stage`` starting after ``done`` of ``total`` steps."""
        return cls(stage, done=done, total=total, message=f"{stage}…")


@dataclass(frozen=True)
class FormatTest:
    """The result of ``bioimageio.core``'s test of one weight format of a package."""

    weight_format: str
    passed: bool
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_bioimageio` wrote and what ``bioimageio test`` said about it.

    Examples
    --------
    >>> r = ExportResult(Path("m.zip"), ("onnx",), (FormatTest("onnx", True),), 1.0, 2.0)
    >>> r.passed, r.summary()
    (True, 'm.zip: bioimageio test passed for onnx')
    """

    path: Path
    weight_formats: tuple[str, ...]
    tests: tuple[FormatTest, ...]
    export_seconds: float
    test_seconds: float

    @property
    def passed(self) -> bool:
        """True when every weight format was tested and passed."""
        done = {t.weight_format for t in self.tests if t.passed}
        return bool(self.tests) and done == set(self.weight_formats)

    def summary(self) -> str:
        """One line: the package and each format's test result."""
        if not self.tests:
            return f"{self.path}: not tested"
        failed = [t.weight_format for t in self.tests if not t.passed]
        if not failed:
            return f"{self.path}: bioimageio test passed for {', '.join(self.weight_formats)}"
        first = next(t for t in self.tests if not t.passed).errors[:1]
        return f"{self.path}: bioimageio test FAILED for {', '.join(failed)}: {list(first)}"


def _model_and_metadata(model) -> tuple[Model, dict]:
    if isinstance(model, Model):
        return model, {}
    from cp2_engine.network import find_model, read_metadata

    spec = find_model(model)
    loaded = Model.load(spec.paths[0], device="cpu")
    loaded.name = spec.name
    return loaded, dict(read_metadata(spec.paths[0]) or {})


def _sample(sample, diameter, model: Model) -> tuple[np.ndarray, str, float]:
    if sample is None:
        from cp2_engine.synthetic import touching_cells

        d = model.diam_labels or model.diam_mean
        logger.warning("no sample image given: the test tensors come from a synthetic image")
        image, label = touching_cells((256, 256), diameter=d, seed=0).image, None
    elif isinstance(sample, (str, os.PathLike)):
        from cp2_engine.io import imread

        image, label = np.asarray(imread(sample)), f"`{Path(sample).name}`"
    else:
        image, label = np.asarray(sample), "the exporting user's image"
    if diameter is None:
        fallback = model.diam_labels if model.diam_labels > 0 else model.diam_mean
        diameter = fallback if model.size_model is None else None
    label = label or "a synthetic image (cp2_engine.synthetic, seed 0)"
    return image, label, diameter


def test_package(
    path, *, weight_formats: Sequence[str] = WEIGHT_FORMATS
) -> tuple[FormatTest, ...]:
    """Run ``bioimageio.core``'s own model test on each weight format of package ``path``.

    The same test as ``bioimageio test PATH --weight-format FORMAT``: it validates the
    description, runs the declared preprocessing and the weights on the test input and
    compares with the test output.
    """
    from bioimageio.core import test_model

    out = []
    for fmt in weight_formats:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # bioimageio.spec notes on rdf fields
            summary = test_model(Path(path), weight_format=fmt, devices=["cpu"])
        errors = tuple(
            f"{d.name}: " + "; ".join(str(e.msg) for e in d.errors)
            for d in summary.details
            if d.status == "failed"
        )
        out.append(FormatTest(fmt, summary.status != "failed", errors))
    return tuple(out)


def _require_bioimageio() -> None:
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "exporting a BioImage.IO package needs bioimageio.core: "
            "pip install 'napari-cp2[export]' (or pip install bioimageio.core)"
        ) from err


def _test_tensors(model: Model, x: np.ndarray, rescale: float, size: int, folder: Path):
    """fp32 test input (raw intensities at the model's scale, ``(1, C, h, w)``) and cp2's
    network output on it after the declared ``scale_range`` preprocessing."""
    multiple = 2 ** (len(model.net.nbase) - 2)
    inp = art.network_input(x, rescale=rescale, size=size, multiple=multiple)
    net = build_net_from_state({k: v.cpu() for k, v in model.net.state_dict().items()}).eval()
    with torch.inference_mode():
        out, _ = net(torch.from_numpy(art.scale_range(inp)))
    np.save(folder / "test_input.npy", inp)
    np.save(folder / "test_output.npy", out.numpy().astype(np.float32))
    return folder / "test_input.npy", folder / "test_output.npy", torch.from_numpy(inp)


def _cover(model: Model, image, diameter: float, options: dict, folder: Path) -> tuple[Path, int]:
    import imageio.v3 as iio

    seg = model.segment(image, diameter=diameter, **options)
    grey = image if np.ndim(image) == 2 else None
    shown = grey if grey is not None else convert_image(image, **options)[0]
    iio.imwrite(folder / "cover.png", art.cover_image(shown, seg.masks))
    return folder / "cover.png", seg.n_masks


def _stage_weights(model: Model, formats, folder: Path, example: torch.Tensor):
    """Yield each format's name before writing it; return {format: path}."""
    state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    paths = {"pytorch_state_dict": art.write_state_dict(state, folder / "weights.pt")}
    net = art.standalone_net(state, nbase=model.net.nbase, nout=model.net.nout, sz=model.net.sz)
    writers = {"torchscript": (art.write_torchscript, "weights_torchscript.pt"),
               "onnx": (art.write_onnx, "weights.onnx")}  # fmt: skip
    for fmt in formats:
        if fmt in writers:
            yield fmt
            write, name = writers[fmt]
            paths[fmt] = write(net, example, folder / name)
    return paths


def _check_request(out: Path, formats, overwrite: bool) -> tuple[str, ...]:
    if out.suffix.lower() != ".zip":
        raise ValueError(f"the package must be a .zip file, got {out}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder for the package does not exist: {out.parent}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another name or pass overwrite=True")
    unknown = sorted(set(formats) - set(WEIGHT_FORMATS))
    if unknown or "pytorch_state_dict" not in formats:
        raise ValueError(
            f"weight_formats must include 'pytorch_state_dict' and only {WEIGHT_FORMATS}, "
            f"got {tuple(formats)}"
        )
    return tuple(f for f in WEIGHT_FORMATS if f in formats)


def iter_export_bioimageio(
    model,
    out,
    *,
    sample=None,
    diameter: float | None = None,
    channels=(0, 0),
    channel_axis: int | None = None,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] | None = None,
    licence: str = "BSD-3-Clause",
    weight_formats: Sequence[str] = WEIGHT_FORMATS,
    test: bool = True,
    overwrite: bool = False,
    test_size: int = 256,
) -> Generator[ExportProgress, None, ExportResult]:
    """:func:`export_bioimageio` as a generator of :class:`ExportProgress` events.

    Long function: one linear sequence of export stages, each announced by an event.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from cp2_engine.network import CPnet
    >>> net = CPnet((2, 8, 16), diam_mean=16.0)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "tiny.zip"
    >>> gen = iter_export_bioimageio(Model.from_net(net), out, test=False, test_size=32,
    ...                              weight_formats=["pytorch_state_dict"])
    >>> events = []
    >>> result = drain(gen, on_event=events.append)
    >>> [e.stage for e in events]
    ['test tensors', 'cover', 'package']
    >>> result.path.name, result.tests
    ('tiny.zip', ())
    """
    _require_bioimageio()
    out = Path(out)
    formats = _check_request(out, weight_formats, overwrite)
    model, metadata = _model_and_metadata(model)
    image, sample_label, diameter = _sample(sample, diameter, model)
    options = {"channels": tuple(channels), "channel_axis": channel_axis}
    if diameter is None:
        diameter = model.estimate_diameter(image, **options)
    total = 3 + len(formats) - 1 + (len(formats) if test else 0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cp2-export-") as tmp:
        folder = Path(tmp)
        yield ExportProgress.of("test tensors", 0, total)
        x = fit_channels(convert_image(image, normalize=False, **options), model.net.nchan)
        test_in, test_out, example = _test_tensors(
            model, x, model.diam_mean / diameter, test_size, folder
        )
        yield ExportProgress.of("cover", 1, total)
        cover, n_masks = _cover(model, image, diameter, options, folder)
        stages = _stage_weights(model, formats, folder, example)
        done = 2
        while True:
            try:
                fmt = next(stages)
            except StopIteration as stop:
                weights = stop.value
                break
            yield ExportProgress.of(fmt, done, total)
            done += 1
        yield ExportProgress.of("package", done, total)
        info = PackageInfo(
            name=name or model.name,
            description=description or metadata.get("description") or f"cp2 model {model.name}",
            diam_mean=model.diam_mean,
            diam_labels=model.diam_labels,
            nbase=tuple(model.net.nbase),
            tile=224,
            channels=tuple(metadata.get("channels") or channels),
            sample=sample_label,
            sample_diameter=float(diameter),
            n_masks=n_masks,
            cp2_version=_cp2_version(),
            metadata=metadata,
        )
        readme = folder / "README.md"
        readme.write_text(readme_text(info), encoding="utf-8")
        arch, masks_script = art.copy_scripts(folder)
        extra = [masks_script]
        size_json = art.write_size_model(model.size_model, folder / art.SIZE_MODEL_FILE)
        extra += [size_json] if size_json is not None else []
        files = PackageFiles(
            weights=weights["pytorch_state_dict"],
            torchscript=weights.get("torchscript"),
            onnx=weights.get("onnx"),
            architecture=arch,
            test_input=test_in,
            test_output=test_out,
            cover=cover,
            readme=readme,
            attachments=tuple(extra),
        )
        _save_package(
            lambda: build_description(
                files, info, authors=_authors(authors, metadata), tags=_TAGS, licence=licence
            ),
            out,
            folder,
        )
    export_seconds = time.perf_counter() - t0
    tests: list[FormatTest] = []
    if test:
        for fmt in formats:
            yield ExportProgress.of(f"bioimageio test ({fmt})", done + 1 + len(tests), total)
            tests += test_package(out, weight_formats=[fmt])
    test_seconds = time.perf_counter() - t0 - export_seconds
    logger.info("exported %s in %.1f s (tests %.1f s)", out, export_seconds, test_seconds)
    return ExportResult(out, formats, tuple(tests), export_seconds, test_seconds)


def _authors(authors, metadata: dict) -> list[str]:
    if authors:
        return [str(a) for a in authors]
    if metadata.get("authors"):
        return [str(a) for a in metadata["authors"]]
    return ["cp2 developers"] if metadata.get("recipe") else ["cp2 user (exported with cp2)"]


def _cp2_version() -> str:
    from cp2_engine import __version__

    return str(__version__)


def _save_package(describe, out: Path, folder: Path) -> None:
    """Build the description (``describe()``) with ``folder`` as its root, zip it there, then
    move the zip onto ``out`` atomically."""
    from bioimageio.spec import ValidationContext, save_bioimageio_package

    staged = folder / "package.zip"
    with ValidationContext(root=folder, perform_io_checks=True):
        save_bioimageio_package(describe(), output_path=staged)

    def copy(fh) -> None:
        with open(staged, "rb") as src:
            shutil.copyfileobj(src, fh)

    atomic_write_file(out, copy)


def export_bioimageio(model, out, **options) -> ExportResult:
    """Export ``model`` as a BioImage.IO model package ``out`` (``.zip``) and test it.

    Parameters
    ----------
    model : str, path or Model
        A model name or weights file (its cp2 sidecar supplies description, channels,
        validation and training data), or a loaded :class:`~cp2_engine.inference.Model`.
    out : str or path
        The ``.zip`` to write (never replaced unless ``overwrite=True``).
    **options
        sample (image array or file; None: a synthetic image), diameter (px of the objects in
        the sample; None: the size model's estimate, else ``diam_labels``), channels,
        channel_axis, name, description, authors, licence (SPDX id), weight_formats (default
        all of :data:`WEIGHT_FORMATS`), test (run ``bioimageio.core``'s test per format),
        overwrite, test_size (largest side of the test tensors).

    Returns
    -------
    ExportResult

    Raises
    ------
    ImportError
        bioimageio.core is not installed (the ``export`` extra).
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    ValueError
        ``out`` is no ``.zip``, an unknown weight format, or a sample too small.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from cp2_engine.network import CPnet
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "tiny.zip"
    >>> r = export_bioimageio(Model.from_net(CPnet((2, 8, 16))), out, test_size=32,
    ...                       weight_formats=["pytorch_state_dict"], test=False)
    >>> r.path.is_file(), r.weight_formats
    (True, ('pytorch_state_dict',))
    """
    return drain(iter_export_bioimageio(model, out, **options))
