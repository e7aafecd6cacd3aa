"""Long jobs without a command of their own, run as subprocesses by test_kill_resume.py.

``python tests/engine/kill_jobs.py hitl FOLDER [--restart]`` retrains the HITL project in FOLDER
(made by :func:`make_hitl_project`) with tiny settings and prints one line per training event.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def hitl_config():
    """Tiny retraining settings: 6 epochs of 2 crops of 32 px, a checkpoint every epoch."""
    from cp2_engine.training import TrainConfig

    return TrainConfig(n_epochs=6, bsize=32, batch_size=2, min_images_per_epoch=2, save_every=1,
                       warmup_epochs=0, min_train_masks=1, device="cpu",
                       precision="fp32")  # fmt: skip


def make_hitl_project(folder: Path) -> None:
    """A project of 3 synthetic images, 2 of them accepted (the labels the round trains on)."""
    from cp2_engine.hitl import HitlProject
    from cp2_engine.synthetic import touching_cells

    cells = [touching_cells((64, 64), n_cells=6, diameter=16, seed=s) for s in range(3)]
    project = HitlProject.create(folder, images=[c.image for c in cells], initial_model="scratch",
                                 device="cpu")  # fmt: skip
    for cell in cells[:2]:
        name = project.next_image()
        project.accept(name, cell.labels.astype(np.uint16))


def print_event(event) -> None:
    """One line per training event (the harness counts them)."""
    kind = type(event).__name__
    if kind == "TrainStarted":
        print(f"started {event.start_epoch}")
    elif kind == "EpochEvent":
        print(f"epoch {event.epoch} loss {event.loss:.6f}")
    elif kind == "CheckpointSaved":
        print(f"saved {event.epoch}")


def hitl(folder: Path, *, restart: bool) -> None:
    """Retrain the project once (resuming an interrupted round)."""
    import torch

    from cp2_engine.hitl import HitlProject
    from cp2_engine.util import drain

    torch.set_num_threads(1)
    project = HitlProject.open(folder, device="cpu")
    gen = project.iter_retrain(config=hitl_config(), evaluate=False, restart=restart)
    record = drain(gen, on_event=print_event)
    print(f"registered {record.model}")


def zoo_data():
    """4 images of 2 styles (96 px) and their labels."""
    from cp2_engine.synthetic import touching_cells

    styles = ("fluorescence", "brightfield")
    cells = [touching_cells((96, 96), diameter=(14, 24)[i % 2], seed=i, style=styles[i % 2])
             for i in range(4)]  # fmt: skip
    return [c.image for c in cells], [c.labels for c in cells]


def zoo(folder: Path) -> None:
    """Build (or resume) a tiny zoo: 3 epochs per model, a checkpoint every epoch."""
    import torch

    from cp2_engine.inference import Model
    from cp2_engine.util import drain
    from cp2_engine.zoo import ZooBuildConfig, iter_build_zoo

    torch.set_num_threads(1)
    tiny = {"bsize": 32, "batch_size": 2, "min_images_per_epoch": 2, "warmup_epochs": 0,
            "device": "cpu", "save_every": 1, "precision": "fp32"}  # fmt: skip
    config = ZooBuildConfig(n_neighbors=1, epochs=3, seed=0, train_overrides=tiny)
    images, labels = zoo_data()
    base = Model.random(seed=0)

    def show(event) -> None:
        if event.train_event is not None:
            print_event(event.train_event)
        else:
            print(f"{event.stage}: {event.message}")

    drain(iter_build_zoo(images, labels, base_model=base, out=folder, config=config), show)
    print("zoo done")


def large(image: Path, out: Path) -> None:
    """Segment a zarr image in blocks of 100 px with the classic segmenter (threads only)."""
    from distributed import Client, LocalCluster

    from cp2_engine.inference import ClassicSegmenter
    from cp2_engine.large import iter_segment_large

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                           dashboard_address=None)  # fmt: skip
    with Client(cluster) as client:
        gen = iter_segment_large(str(image), model=ClassicSegmenter(threshold=0.25), diameter=20,
                                 out=out, blocksize=100, cluster=client)  # fmt: skip
        for event in gen:
            kind = type(event).__name__
            print(f"{kind} {getattr(event, 'index', '')} skipped={getattr(event, 'skipped', '')}")
    cluster.close()
    print("large done")


def main(argv=None) -> int:
    """Run the job named on the command line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=("hitl", "zoo", "large"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--restart", action="store_true")
    args = parser.parse_args(argv)
    if args.job == "hitl":
        hitl(args.folder, restart=args.restart)
    elif args.job == "zoo":
        zoo(args.folder)
    else:
        large(args.folder, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
