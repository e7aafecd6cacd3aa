"""The nuclei model zoo on DSB2018 (issue #6's demonstration, paper Fig. 2 for nuclei).

Styles of the DSB2018 train split from ``cp2_nuclei`` -> kNN graph (50 neighbours) + Leiden
(resolution 0.25, the paper's nuclei settings) -> one specialist per cluster fine-tuned from
``cp2_nuclei`` -> a generalist fine-tuned the same way on images sampled equally across
clusters -> both evaluated on the validation split (AP at IoU 0.5-0.95, true diameters given).

The build is resumable (``cp2_engine.zoo.iter_build_zoo``), so the clusters can be computed on one
machine and the models trained on another (a GPU) by running the same command twice::

    python benchmarks/zoo_dsb2018.py --data DATA/dsb2018 --out ZOO --stop-after-clusters
    python benchmarks/zoo_dsb2018.py --data DATA/dsb2018 --out ZOO --epochs 40

Figures: ``ZOO/styles_tsne.png`` (t-SNE of the training styles by cluster, with example crops;
written once the clusters exist) and ``ZOO/eval/ap.png`` (AP vs IoU threshold, zoo vs
generalist). ``--figures DIR`` also copies them to ``DIR/zoo_dsb2018_styles.png`` and
``DIR/zoo_dsb2018_ap.png``, the figures of ``docs/zoo.md`` (``--figures docs/images``).

``DATA/dsb2018/train`` holds ``<id>_img.tif`` / ``<id>_masks.tif`` (the shared dataset); the
split lists are ``splits/dsb2018_{train,val}.csv``. RGB images are converted to grey (mean of
the channels, as ``channels=[0, 0]`` does) before anything else, so the data fingerprint of a
resumed build is the same whether it reads the RGB originals or a grey copy.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("zoo_dsb2018")


def grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey image: the rounded mean of the RGB channels (2-D images pass through)."""
    if image.ndim == 3:
        return np.round(image[..., :3].astype(np.float32).mean(-1)).astype(np.uint8)
    return image


def load_split(root: Path, split: str) -> tuple[list, list, list, list]:
    """Images, labels, ids and image types of one split of the DSB2018 train folder."""
    with open(REPO / "splits" / f"dsb2018_{split}.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    images, labels = [], []
    for row in rows:
        images.append(grey(tifffile.imread(root / "train" / f"{row['id']}_img.tif")))
        labels.append(tifffile.imread(root / "train" / f"{row['id']}_masks.tif"))
    return images, labels, [r["id"] for r in rows], [r["type"] for r in rows]


def build(args, images, labels):
    """Build (or resume) the zoo; returns the Zoo, or None when stopped after clustering."""
    from cp2_engine.zoo import ZooBuildConfig, iter_build_zoo

    config = ZooBuildConfig(
        n_neighbors=args.neighbors, resolution=args.resolution, epochs=args.epochs, seed=0,
        channels=(0, 0), min_cluster_size=5, train_overrides={"bsize": args.bsize},
    )  # fmt: skip
    gen = iter_build_zoo(images, labels, base_model="cp2_nuclei", out=args.out, config=config)
    t0 = time.perf_counter()
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if event.stage != "train":
            logger.info("[%.0f s] %s", time.perf_counter() - t0, event.message)
        if event.stage == "clusters" and args.stop_after_clusters:
            gen.close()
            return None


def style_figure(zoo_folder: Path, images: list, seed: int = 0) -> Path:
    """``zoo_folder/styles_tsne.png``: t-SNE of the clustered styles with example crops."""
    from cp2_engine.viz import plot_style_map
    from cp2_engine.zoo import tsne_embedding

    styles = np.load(zoo_folder / "styles.npy")
    clusters = np.load(zoo_folder / "labels.npy")
    if len(images) != len(styles):
        raise ValueError(f"{len(images)} images with cells for {len(styles)} styles in "
                         f"{zoo_folder}: expected one image per clustered style")  # fmt: skip
    path = zoo_folder / "styles_tsne.png"
    plot_style_map(tsne_embedding(styles, seed=seed), clusters, images, path, seed=seed)
    return path


def copy_figures(zoo_folder: Path, out_dir: Path) -> list[Path]:
    """Copy the zoo's figures to ``out_dir`` under the names docs/zoo.md uses (atomic writes);
    the AP figure only once the zoo was evaluated."""
    from cp2_engine.util import atomic_write_file

    pairs = [(zoo_folder / "styles_tsne.png", "zoo_dsb2018_styles.png"),
             (zoo_folder / "eval" / "ap.png", "zoo_dsb2018_ap.png")]  # fmt: skip
    written = []
    for source, name in pairs:
        if source.is_file():
            data = source.read_bytes()
            written.append(atomic_write_file(out_dir / name, lambda f, d=data: f.write(d)))
    return written


def cluster_table(labels: np.ndarray, types: list[str]) -> str:
    """Markdown table: cluster size and its composition by DSB2018 image type."""
    kinds = sorted(set(types))
    lines = ["| cluster | images | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 2) + "|"]
    for c in np.unique(labels):
        sel = [t for t, lab in zip(types, labels) if lab == c]
        counts = " | ".join(str(sel.count(k)) for k in kinds)
        lines.append(f"| {c} | {len(sel)} | {counts} |")
    return "\n".join(lines)


def evaluate(zoo_folder: Path, images, labels, names, out: Path) -> str:
    """Zoo vs generalist on the validation images: writes ap.csv/md/png, returns the table."""
    from cp2_engine.util import drain
    from cp2_engine.zoo import ZooModel, iter_evaluate_zoo, plot_ap_curves

    zoo_model = ZooModel.load(zoo_folder)
    evaluation = drain(iter_evaluate_zoo(zoo_model, images, labels, names=names))
    out.mkdir(parents=True, exist_ok=True)
    evaluation.write_csv(out / "ap.csv")
    table = evaluation.to_markdown()
    (out / "ap.md").write_text(table + "\n", encoding="utf-8")
    plot_ap_curves(evaluation, out / "ap.png")
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/datasets/dsb2018"))
    parser.add_argument("--out", type=Path, required=True, help="zoo folder (resumed)")
    parser.add_argument("--neighbors", type=int, default=50)
    parser.add_argument("--resolution", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=40, help="epochs per model")
    parser.add_argument("--bsize", type=int, default=224)
    parser.add_argument("--stop-after-clusters", action="store_true")
    parser.add_argument(
        "--figures", type=Path, help="also copy the figures here (docs/zoo.md: docs/images)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    images, labels, _, types = load_split(args.data, "train")
    zoo = build(args, images, labels)
    keep = [i for i, lab in enumerate(labels) if lab.max() > 0]
    clusters = np.load(args.out / "labels.npy")
    table = cluster_table(clusters, [types[i] for i in keep])
    (args.out / "clusters.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"t-SNE map: {style_figure(args.out, [images[i] for i in keep])}")
    if zoo is not None:
        val_images, val_labels, val_ids, _ = load_split(args.data, "val")
        ap = evaluate(args.out, val_images, val_labels, val_ids, args.out / "eval")
        print(ap)
        info = {"epochs": args.epochs, "bsize": args.bsize, "n_train": len(images)}
        text = json.dumps(info, indent=2)
        (args.out / "demonstration.json").write_text(text, encoding="utf-8")
    if args.figures is not None:
        print("wrote " + " ".join(map(str, copy_figures(args.out, args.figures))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
