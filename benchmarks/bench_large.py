"""Benchmark: a large synthetic image on a dask LocalCluster vs the single-process path.

Reports wall time, peak memory per worker and in the driver, and throughput (megapixels/s)
against the single-process path measured in the same run.

    python benchmarks/bench_large.py            # 8192^2, about 30k cells
    python benchmarks/bench_large.py --quick    # 2048^2
    python benchmarks/bench_large.py --segmenter classic

For a network segmenter it also prints how many 224-px network tiles one pass over the image
and the blocks run: the blocks share the tiles of one pass, so the two are equal (see
``docs/large_images.md``).

Targets (issue 7): peak memory per worker <= 3 GB at blocksize 2048, and throughput >= 0.9x the
single-process path per core used. The image is written to zarr by a separate process, so the
driver's peak memory is that of a driver which never holds the image.

The default segmenter is a cp2 network model: the bundled ``cp2_nuclei`` if present, else a
random-weights network (same compute, meaningless masks; said in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _make_image(path: Path, size: int, diameter: float) -> int:
    """Write the synthetic image to zarr in a child process; return its number of cells."""
    code = f"""
import zarr
from cp2_engine.synthetic import touching_cells
s = touching_cells(({size}, {size}), diameter={diameter}, seed=0)
zarr.create_array({str(path)!r}, data=(s.image * 65535).astype("uint16"), chunks=(1024, 1024))
print(int(s.labels.max()))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def _segmenter(kind: str):
    if kind == "classic":
        from cp2_engine.inference import ClassicSegmenter

        return ClassicSegmenter(threshold=0.25 * 65535), "classic watershed"
    from cp2_engine.inference import Model

    try:
        return Model.load("cp2_nuclei", device="cpu"), "bundled cp2_nuclei"
    except FileNotFoundError:
        return Model.random(seed=0), "random-weights CPnet (timing only)"


def _single_process(zpath: Path, kind: str, diameter: float, threads: int) -> dict:
    """Segment the whole image in one child process (all cores) and report time and memory."""
    code = f"""
import json, resource, time, zarr, numpy as np, torch, sys
sys.path.insert(0, {str(HERE)!r})
from bench_large import _segmenter
torch.set_num_threads({threads})
seg, _ = _segmenter({kind!r})
img = zarr.open_array({str(zpath)!r}, mode="r")[:]
t0 = time.perf_counter()
masks = seg.segment(img, diameter={diameter}).masks
dt = time.perf_counter() - t0
print(json.dumps({{"seconds": dt, "n_cells": int(masks.max()),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}}))
"""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tile_counts(size: int, blocksize: int, rescale: float) -> tuple[int, int]:
    """224-px network tiles of one pass over the image, and of the blocks together."""
    from cp2_engine.large import BlockGrid, NetworkLayout

    layout = NetworkLayout.build((size, size), blocksize=blocksize, rescale=rescale)
    grid = BlockGrid((size, size), blocksize, 0)
    return layout.grid.n_tiles, sum(len(layout.tiles_of(*b)) for b in grid.indices())


def _worker_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _distributed(zpath: Path, out: Path, kind: str, diameter, blocksize, n_workers) -> dict:
    from distributed import Client

    from cp2_engine.large import local_cluster, segment_large

    seg, _ = _segmenter(kind)
    with (
        local_cluster(n_workers=n_workers, memory_limit="6GB") as cluster,
        Client(cluster) as client,
    ):
        t0 = time.perf_counter()
        res = segment_large(
            str(zpath),
            model=seg,
            diameter=diameter,
            out=out,
            blocksize=blocksize,
            cluster=client,
            overwrite=True,
        )
        dt = time.perf_counter() - t0
        peaks = client.run(_worker_peak_gb)
    return {
        "seconds": dt,
        "n_cells": res.n_cells,
        "worker_peak_rss_gb": max(peaks.values()),
        "driver_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2048^2 instead of 8192^2")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--blocksize", type=int, default=None)
    parser.add_argument("--segmenter", choices=("network", "classic"), default="network")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    size = args.size or (2048 if args.quick else 8192)
    blocksize = args.blocksize or (1024 if args.quick else 2048)
    diameter = 17.0
    with tempfile.TemporaryDirectory() as tmp:
        zpath = Path(tmp) / "image.zarr"
        n_true = _make_image(zpath, size, diameter)
        _, what = _segmenter(args.segmenter)
        print(f"image {size}x{size}, {n_true} cells, segmenter: {what}, blocksize {blocksize}")
        single = _single_process(zpath, args.segmenter, diameter, threads=args.workers)
        dist = _distributed(
            zpath, Path(tmp) / "labels.zarr", args.segmenter, diameter, blocksize, args.workers
        )
    mpix = size * size / 1e6
    single_tp = mpix / single["seconds"] / args.workers
    dist_tp = mpix / dist["seconds"] / args.workers
    print(f"{'path':<28}{'wall s':>9}{'MP/s/core':>11}{'cells':>8}{'peak GB':>9}")
    print(
        f"{'single process':<28}{single['seconds']:>9.1f}{single_tp:>11.3f}"
        f"{single['n_cells']:>8}{single['peak_rss_gb']:>9.2f}"
    )
    print(
        f"{'LocalCluster ' + str(args.workers) + 'x1 thread':<28}{dist['seconds']:>9.1f}"
        f"{dist_tp:>11.3f}{dist['n_cells']:>8}{dist['worker_peak_rss_gb']:>9.2f}  (worker)"
    )
    print(f"{'':<28}{'':>9}{'':>11}{'':>8}{dist['driver_peak_rss_gb']:>9.2f}  (driver)")
    ratio = dist_tp / single_tp
    print(f"throughput ratio distributed/single per core: {ratio:.2f} (target >= 0.9)")
    print(f"peak worker memory: {dist['worker_peak_rss_gb']:.2f} GB (target <= 3 GB)")
    if args.segmenter == "network":
        rescale = _segmenter(args.segmenter)[0].diam_mean / diameter
        one_pass, blocks = _tile_counts(size, blocksize, rescale)
        print(f"network tiles: {one_pass} in one pass, {blocks} run by the blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
