"""``cp2 zoo build|route|eval``: build a model zoo, route images to specialists, evaluate it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cp2_engine.cli._progress import ProgressDisplay

NAME = "zoo"
HELP = "build a zoo of specialist models from style clusters, route images, evaluate"

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``build``, ``route`` and ``eval`` sub-subcommands."""
    sub = parser.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="cluster training styles and train one model each")
    build.add_argument("data", nargs="+", type=Path, help="folders of images with _masks labels")
    build.add_argument("--out", type=Path, required=True, help="zoo folder (resumed if present)")
    build.add_argument(
        "--base",
        required=True,
        help="generalist model (name or path) for styles and initial weights; "
        "'random' = random weights (pipeline tests only: clusters meaningless)",
    )
    build.add_argument("--neighbors", type=int, default=100, help="kNN graph size (100)")
    build.add_argument("--resolution", type=float, default=0.45, help="Leiden resolution (0.45)")
    build.add_argument("--epochs", type=int, default=100, help="training epochs per model (100)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--from-scratch", action="store_true", help="train from random weights")
    build.add_argument("--min-cluster-size", type=int, default=2)
    build.add_argument("--no-generalist", action="store_true", help="skip the comparison model")
    _common(build)
    route = sub.add_parser("route", help="say which specialist each image goes to, and why")
    route.add_argument("images", nargs="+", type=Path, help="image files or folders")
    route.add_argument("--zoo", type=Path, required=True)
    route.add_argument("--diameter", type=float, default=None, help="object diameter (pixels)")
    _common(route)
    ev = sub.add_parser("eval", help="AP 0.5-0.95 of the zoo vs its generalist")
    ev.add_argument("--zoo", type=Path, required=True)
    ev.add_argument("--test", type=Path, nargs="+", required=True, help="labelled test folders")
    ev.add_argument("--out", type=Path, default=None, help="report folder (default ZOO/eval)")
    _common(ev)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channels", type=int, nargs=2, default=(0, 0), metavar=("CHAN", "CHAN2"))
    parser.add_argument("--mask-filter", default="_masks", help="label file suffix (_masks)")
    parser.add_argument("--device", default="auto")


def _load_data(folders, mask_filter: str):
    from cp2_engine.training import load_folder

    images, labels, names = [], [], []
    for folder in folders:
        data = load_folder(folder, mask_filter=mask_filter)
        images += list(data.images)
        labels += list(data.labels)
        names += [f"{Path(folder).name}/{n}" for n in data.names]
    return images, labels, names


def _base_model(spec: str, seed: int, device: str):
    from cp2_engine.inference import Model

    if spec == "random":
        log.warning("random base model: styles and clusters are NOT meaningful")
        return Model.random(seed=seed)
    return Model.load(spec, device=device)


def _run_build(args) -> int:
    from cp2_engine.zoo import ZooBuildConfig, iter_build_zoo

    images, labels, _ = _load_data(args.data, args.mask_filter)
    config = ZooBuildConfig(
        n_neighbors=args.neighbors,
        resolution=args.resolution,
        epochs=args.epochs,
        from_scratch=args.from_scratch,
        seed=args.seed,
        channels=tuple(args.channels),
        min_cluster_size=args.min_cluster_size,
        train_generalist=not args.no_generalist,
        train_overrides={"device": args.device},
        device=args.device,
    )
    base = _base_model(args.base, args.seed, args.device)
    gen = iter_build_zoo(images, labels, base_model=base, out=args.out, config=config)
    zoo = ProgressDisplay("zoo").follow(gen)
    for c in zoo.manifest.clusters:
        print(f"cluster{c.id}: {c.n_images} images, diam_labels {c.diam_labels:.1f}, {c.model}")
    _style_plot(zoo, images, labels, args.seed)
    print(f"zoo written to {zoo.folder}")
    return 0


def _style_plot(zoo, images, labels, seed: int) -> None:
    import numpy as np

    from cp2_engine.metrics import diameters
    from cp2_engine.viz import plot_style_map
    from cp2_engine.zoo import tsne_embedding

    with_cells = [im for im, lab in zip(images, labels) if diameters(np.asarray(lab))[0] > 0]
    if len(with_cells) != zoo.styles.shape[0]:
        log.warning("cannot match images to styles; skipping the t-SNE plot")
        return
    emb = tsne_embedding(zoo.styles, seed=seed)
    plot_style_map(emb, zoo.labels, with_cells, zoo.folder / "styles_tsne.png", seed=seed)
    print(f"t-SNE map: {zoo.folder / 'styles_tsne.png'}")


def _image_paths(paths) -> list[Path]:
    files = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    return files


def _read_image(path: Path):
    import numpy as np

    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(path))
    from skimage import io as skio

    return np.asarray(skio.imread(path))


def _run_route(args) -> int:
    from cp2_engine.zoo import ZooModel

    model = ZooModel.load(args.zoo, device=args.device)
    for path in _image_paths(args.images):
        d = model.route(_read_image(path), diameter=args.diameter, channels=tuple(args.channels))
        print(f"{path.name}\t{d.model_name}\t{d.reason}")
    return 0


def _run_eval(args) -> int:
    from cp2_engine.zoo import ZooModel, iter_evaluate_zoo, plot_ap_curves

    model = ZooModel.load(args.zoo, device=args.device)
    images, labels, names = _load_data(args.test, args.mask_filter)
    gen = iter_evaluate_zoo(model, images, labels, names=names, channels=tuple(args.channels))
    evaluation = ProgressDisplay("eval", unit="image").follow(gen)
    out = args.out or (args.zoo / "eval")
    out.mkdir(parents=True, exist_ok=True)
    evaluation.write_csv(out / "ap.csv")
    table = evaluation.to_markdown()
    (out / "ap.md").write_text(table + "\n")
    plot_ap_curves(evaluation, out / "ap.png")
    print(table)
    print(f"report: {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action; returns the exit status."""
    actions = {"build": _run_build, "route": _run_route, "eval": _run_eval}
    return actions[args.zoo_command](args)
