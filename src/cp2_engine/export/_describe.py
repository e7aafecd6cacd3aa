"""The BioImage.IO description (``rdf.yaml``) of an exported model, built with the classes of
the installed ``bioimageio.spec`` (model format 0.5.x), never written by hand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cp2_engine.export._artifacts import ONNX_OPSET
from cp2_engine.export._readme import CITATIONS, PackageInfo

__all__ = ["PackageFiles", "build_description"]

INPUT_ID, OUTPUT_ID = "input", "output"
CHANNELS_IN = ("cyto", "nucleus")
CHANNELS_OUT = ("flow_y", "flow_x", "cellprob")


@dataclass(frozen=True)
class PackageFiles:
    """The staged files a description points to."""

    weights: Path
    torchscript: Path | None
    onnx: Path | None
    architecture: Path
    test_input: Path
    test_output: Path
    cover: Path
    readme: Path
    attachments: tuple[Path, ...]


def _axes(v, *, multiple: int, output: bool):
    space = v.SpaceOutputAxis if output else v.SpaceInputAxis
    names = CHANNELS_OUT if output else CHANNELS_IN

    def size(axis):
        if output:
            return v.SizeReference(tensor_id=v.TensorId(INPUT_ID), axis_id=v.AxisId(axis))
        return v.ParameterizedSize(min=multiple, step=multiple)

    return [
        v.BatchAxis(),
        v.ChannelAxis(channel_names=[v.Identifier(n) for n in names]),
        space(id=v.AxisId("y"), size=size("y")),
        space(id=v.AxisId("x"), size=size("x")),
    ]


def _tensors(v, files: PackageFiles, info: PackageInfo):
    normalise = v.ScaleRangeDescr(
        kwargs=v.ScaleRangeKwargs(
            axes=[v.AxisId("y"), v.AxisId("x")], min_percentile=1.0, max_percentile=99.0
        )
    )
    inp = v.InputTensorDescr(
        id=v.TensorId(INPUT_ID),
        description=(
            f"(cyto, nucleus or 0) rescaled so objects are {info.diam_mean:g} px; y, x multiples "
            f"of {info.multiple}; cp2 tiles {info.tile} px (README)"
        ),
        axes=_axes(v, multiple=info.multiple, output=False),
        test_tensor=v.FileDescr(source=files.test_input),
        data=v.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[normalise],
    )
    out = v.OutputTensorDescr(
        id=v.TensorId(OUTPUT_ID),
        description="5*flow_y, 5*flow_x, cellprob logit; masks need flow following (cp2_masks.py)",
        axes=_axes(v, multiple=info.multiple, output=True),
        test_tensor=v.FileDescr(source=files.test_output),
        data=v.IntervalOrRatioDataDescr(type="float32"),
    )
    return [inp], [out]


def _weights(v, files: PackageFiles, info: PackageInfo):
    torch_version = v.Version(torch.__version__.split("+")[0])
    arch = v.ArchitectureFromFileDescr(
        source=files.architecture,
        callable=v.Identifier("CPnet"),
        kwargs={"nbase": list(info.nbase), "nout": 3, "sz": 3, "diam_mean": info.diam_mean},
    )
    entries = {
        "pytorch_state_dict": v.PytorchStateDictWeightsDescr(
            source=files.weights, architecture=arch, pytorch_version=torch_version
        )
    }
    if files.torchscript is not None:
        entries["torchscript"] = v.TorchscriptWeightsDescr(
            source=files.torchscript, pytorch_version=torch_version, parent="pytorch_state_dict"
        )
    if files.onnx is not None:
        entries["onnx"] = v.OnnxWeightsDescr(
            source=files.onnx, opset_version=ONNX_OPSET, parent="pytorch_state_dict"
        )
    return v.WeightsDescr(**entries)


def build_description(files: PackageFiles, info: PackageInfo, *, authors, tags, licence: str):
    """The ``ModelDescr`` (format 0.5.x) of a package whose files are staged in ``files``."""
    from bioimageio.spec.model import v0_5 as v

    inputs, outputs = _tensors(v, files, info)
    metadata = dict(info.metadata or {})
    cp2 = {
        "diam_mean": info.diam_mean,
        "diam_labels": info.diam_labels,
        "nbase": list(info.nbase),
        "channels": list(info.channels),
        "tile": info.tile,
        "cp2_version": info.cp2_version,
        "source_sha256": metadata.get("sha256", ""),
        "masks": {"cellprob_threshold": 0.0, "flow_threshold": 0.4, "niter": 200},
    }
    return v.ModelDescr(
        name=info.name if len(info.name) >= 5 else f"cp2 {info.name}",
        description=info.description[:1024],
        authors=[v.Author(name=a) for a in authors],
        cite=[v.CiteEntry(text=text, doi=v.Doi(doi)) for text, doi in CITATIONS],
        license=v.LicenseId(licence),
        tags=list(tags),
        documentation=v.FileDescr(source=files.readme),
        covers=[v.FileDescr(source=files.cover)],
        attachments=[v.FileDescr(source=p) for p in files.attachments],
        inputs=inputs,
        outputs=outputs,
        weights=_weights(v, files, info),
        config=v.Config(
            bioimageio=v.BioimageioConfig(
                architecture_type="CPnet",
                architecture_description="Cellpose 2/3 residual U-net with a style vector",
                task="instance segmentation via flows and cell probability",
            ),
            cp2=cp2,
        ),
    )
