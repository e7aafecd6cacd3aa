"""What a batch writes per image, and the sidecar that says the outputs are complete and current.

Per image ``<stem>`` (in the output folder, or beside the image): ``<stem>_cp_masks.tif``,
``<stem>_seg.npy``, ``<stem>_cp_overlay.png`` (the files ``cp2 segment`` writes), the chosen ROI
exports (``<stem>_rois.zip``, ``<stem>_cp_outlines.txt``, ``<stem>.geojson``) and, written last,
``<stem>_cp2_batch.json``: the settings hash, the image's signature and the outputs. A rerun skips
an image whose sidecar has the same settings hash and image signature and whose outputs exist.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cp2_engine import io, viz
from cp2_engine.util import atomic_write

__all__ = ["ROI_FORMATS", "SIDECAR_SUFFIX", "output_paths", "settings_hash"]

#: ROI export format -> file suffix.
ROI_FORMATS = {"imagej": "_rois.zip", "outlines": "_cp_outlines.txt", "geojson": ".geojson"}
#: Suffix of the per-image record of a finished batch image.
SIDECAR_SUFFIX = "_cp2_batch.json"
#: Settings that change nothing in the outputs (not part of the hash).
_RUNTIME_FIELDS = ("device", "batch_size", "channels_last")


def settings_hash(model: str, config, *, outputs=()) -> str:
    """A short hash of the model, the segmentation settings and the outputs asked for.

    A model given as a file includes its size and modification time, so a retrained model
    saved under the same name is a different model.

    Examples
    --------
    >>> from cp2_engine.inference import SegmentConfig
    >>> a = settings_hash("cp2_cyto", SegmentConfig(diameter=30))
    >>> a == settings_hash("cp2_cyto", SegmentConfig(diameter=30, device="cpu")), len(a)
    (True, 16)
    >>> a == settings_hash("cp2_cyto", SegmentConfig(diameter=31))
    False
    """
    settings = {k: v for k, v in asdict(config).items() if k not in _RUNTIME_FIELDS}
    record = {"model": str(model), "config": settings, "outputs": sorted(outputs)}
    path = Path(str(model))
    if path.is_file():
        stat = path.stat()
        record["model_file"] = [stat.st_size, stat.st_mtime_ns]
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_signature(source) -> str:
    """Size and modification time of an image file, or a digest of an array's bytes."""
    if isinstance(source, np.ndarray):
        digest = hashlib.blake2b(np.ascontiguousarray(source).tobytes(), digest_size=12)
        return f"array:{source.shape}:{source.dtype}:{digest.hexdigest()}"
    stat = Path(source).stat()
    return f"file:{stat.st_size}:{stat.st_mtime_ns}"


def output_paths(folder: Path, stem: str, *, save_npy=True, save_overlay=True, roi_formats=()):
    """``{kind: path}`` of the files a batch writes for image ``stem`` into ``folder``."""
    out = {"masks": folder / f"{stem}_cp_masks.tif"}
    if save_npy:
        out["npy"] = folder / f"{stem}_seg.npy"
    if save_overlay:
        out["overlay"] = folder / f"{stem}_cp_overlay.png"
    for fmt in roi_formats:
        if fmt not in ROI_FORMATS:
            raise ValueError(f"unknown ROI format {fmt!r}; expected one of {sorted(ROI_FORMATS)}")
        out[fmt] = folder / f"{stem}{ROI_FORMATS[fmt]}"
    return out


def read_sidecar(path: Path) -> dict | None:
    """The sidecar's record, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_current(sidecar: Path, *, settings: str, signature: str, outputs: dict) -> dict | None:
    """The sidecar record when the outputs are complete and current, else None."""
    record = read_sidecar(sidecar)
    if record is None or record.get("settings") != settings:
        return None
    if record.get("image") != signature:
        return None
    if not all(p.exists() for p in outputs.values()):
        return None
    return record


def write_outputs(image, seg, outputs: dict, *, model: str) -> None:
    """Write the masks, ``_seg.npy``, overlay and ROI files of one segmented image."""
    from cp2_engine.inference import save_segmentation_npy

    io.save_masks(outputs["masks"], seg.masks, overwrite=True)
    if "npy" in outputs:
        save_segmentation_npy(outputs["npy"], seg, image=image, model_path=model, overwrite=True)
    writers = {
        "imagej": io.save_imagej_rois,
        "outlines": io.save_outlines_txt,
        "geojson": io.save_geojson,
    }
    for fmt, writer in writers.items():
        if fmt in outputs and seg.masks.any():
            writer(outputs[fmt], seg.masks, overwrite=True)
        elif fmt in outputs:  # no ROIs: an empty export, so the outputs are still complete
            _empty_export(fmt, outputs[fmt])
    if "overlay" in outputs:
        viz.overlay_png(outputs["overlay"], image, seg.masks, overwrite=True)


def _empty_export(fmt: str, path: Path) -> None:
    text = json.dumps({"type": "FeatureCollection", "features": []}) if fmt == "geojson" else ""
    if fmt == "imagej":
        import zipfile

        with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w"):
            pass
        return
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_sidecar(path: Path, record: dict) -> None:
    """Write the sidecar last: its presence says the image's outputs are complete."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
