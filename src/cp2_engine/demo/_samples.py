"""The demo's inputs and output folder: sample images, their bundled model, the manifest."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from ._settings import DemoSettings

__all__ = ["MANIFEST", "default_sample_dir", "find_samples", "model_for_sample", "prepare_out_dir"]

logger = logging.getLogger(__name__)

#: File that marks a folder as a cp2 demo output (the demo only ever replaces such folders).
MANIFEST = "demo_manifest.json"
_MODEL_BY_PREFIX = (
    ("dsb2018_", "cp2_nuclei"),
    ("usiigaci_", "cp2_cyto"),
    ("synthetic_", "cp2_cyto"),
)


def default_sample_dir() -> Path:
    """``$CP2_SAMPLE_DATA`` if set, else ``sample_data/`` of the source checkout.

    Examples
    --------
    >>> default_sample_dir().name
    'sample_data'
    """
    env = os.environ.get("CP2_SAMPLE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "sample_data"


def find_samples(sample_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """List ``(name, image, labels)`` for every image with ``_masks`` labels (``<name>.tif`` +
    ``<name>_masks.tif``; cp2's one naming rule, :func:`cp2_engine.io.find_image_label_pairs`).

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or holds no image with labels.

    Examples
    --------
    >>> [s[0] for s in find_samples(default_sample_dir())][:1]
    ['dsb2018_fluo_nuclei']
    """
    folder = Path(sample_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"sample data folder not found: {folder}")
    from cp2_engine import io

    pairs = io.find_image_label_pairs(folder, kinds=("_masks",))
    found = [(io.image_base(img), img, masks) for img, masks in pairs]
    if not found:
        raise FileNotFoundError(f"no <name>.tif + <name>_masks.tif pairs in {folder}")
    return found


def model_for_sample(name: str) -> str:
    """The bundled model for a sample image: ``dsb2018_*`` → cp2_nuclei, else cp2_cyto.

    Examples
    --------
    >>> model_for_sample("dsb2018_fluo_nuclei"), model_for_sample("usiigaci_phase_3t3")
    ('cp2_nuclei', 'cp2_cyto')
    """
    return next((m for p, m in _MODEL_BY_PREFIX if name.startswith(p)), "cp2_cyto")


def _select_samples(samples: list, limit: int | None) -> list:
    """At most ``limit`` samples per model (smallest files first), in the original order."""
    if limit is None:
        return samples
    keep: dict[str, list] = {}
    for s in sorted(samples, key=lambda s: s[1].stat().st_size):
        keep.setdefault(model_for_sample(s[0]), []).append(s)
    chosen = {s[0] for group in keep.values() for s in group[:limit]}
    return [s for s in samples if s[0] in chosen]


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Check and prepare the output folder; return it.

    A new or empty folder is used as is. A folder holding :data:`MANIFEST` is an earlier demo
    output: its ``hitl/`` projects are removed and its other files replaced (so is a folder holding
    only what the earlier round-trip demo wrote). Any other non-empty folder is refused, so user
    files are never overwritten.

    Raises
    ------
    FileExistsError
        If ``out_dir`` is a file, or a non-empty folder that is not a demo output.

    Examples
    --------
    >>> import tempfile
    >>> prepare_out_dir(Path(tempfile.mkdtemp()) / "demo").is_dir()
    True
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; expected a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file() and not _is_old_demo_output(out):
            raise FileExistsError(
                f"{out} is not empty and is not a cp2 demo output (no {MANIFEST}); "
                "choose a new or empty folder: the demo never overwrites other files"
            )
        logger.info("replacing the earlier demo output in %s", out)
        shutil.rmtree(out / "hitl", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _is_old_demo_output(out: Path) -> bool:
    """Whether ``out`` holds only what the earlier round-trip demo wrote (no manifest then)."""
    names = [p.name for p in out.iterdir()]
    ours = [n for n in names if n == "demo_summary.md" or n.endswith("_roundtrip_overlay.png")]
    return "demo_summary.md" in names and len(ours) == len(names)


def _write_manifest(out: Path, settings: DemoSettings, sample_dir: Path) -> None:
    from cp2_engine import __version__
    from cp2_engine.util import atomic_write

    data = {
        "cp2_demo": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sample_dir": str(sample_dir),
        "settings": dataclasses.asdict(settings),
    }
    with atomic_write(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
