"""Zoo timings: cluster 10,000 styles; route 1,000 images (kNN vote alone, and with the style
forward pass on 224 x 224 crops).

Run: ``OMP_NUM_THREADS=2 python benchmarks/bench_zoo.py [--n-styles 10000] [--n-route 1000]
[--n-forward 64]``. The forward pass is timed on ``--n-forward`` crops and scaled to
``--n-route`` images; the baseline in the same run is the full net forward (encoder and
decoder), which is what a style computed through ``net(x)`` would cost.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from cp2_engine.network import CPnet
from cp2_engine.zoo import StyleRouter, cluster_styles, compute_styles, knn_graph, leiden_partition


def planted(n: int, k: int = 8, dim: int = 256, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    truth = rng.integers(0, k, n)
    s = centres[truth] / np.sqrt(dim) + rng.normal(scale=0.02, size=(n, dim))
    return s / np.linalg.norm(s, axis=1, keepdims=True), truth


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-styles", type=int, default=10_000)
    parser.add_argument("--n-route", type=int, default=1_000)
    parser.add_argument("--n-forward", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="2,000 styles, 200 routed, 16 nets")
    args = parser.parse_args()
    if args.quick:
        args.n_styles, args.n_route, args.n_forward = 2_000, 200, 16
    styles, truth = planted(args.n_styles)
    graph, t_knn = timed(lambda: knn_graph(styles, n_neighbors=100))
    labels, t_leiden = timed(lambda: leiden_partition(graph, resolution=0.45, seed=0))
    _, t_total = timed(lambda: cluster_styles(styles, seed=0))
    print(
        f"cluster {args.n_styles} styles: knn {t_knn:.2f} s + leiden {t_leiden:.2f} s; "
        f"cluster_styles {t_total:.2f} s; {np.unique(labels).size} clusters, "
        f"ARI vs planted {adjusted_rand_score(truth, labels):.3f}"
    )
    router, t_fit = timed(lambda: StyleRouter.fit(styles, labels))
    queries, _ = planted(args.n_route, seed=1)
    _, t_route = timed(lambda: router.route_batch(queries))
    print(
        f"route {args.n_route} styles (5-NN vote): fit {t_fit * 1e3:.1f} ms, "
        f"route {t_route * 1e3:.1f} ms ({t_route / args.n_route * 1e6:.1f} us/image)"
    )
    rng = np.random.default_rng(2)
    images = [rng.random((256, 256)).astype(np.float32) for _ in range(args.n_forward)]
    net = CPnet().eval()
    _, t_style = timed(lambda: compute_styles(net, images, diameters=30, batch_size=8))
    x = torch.from_numpy(rng.random((8, 2, 224, 224), dtype=np.float32))
    with torch.inference_mode():
        _, t_full = timed(lambda: [net(x) for _ in range(args.n_forward // 8)])
    scale = args.n_route / args.n_forward
    print(
        f"style pass on {args.n_forward} 224x224 crops: {t_style:.2f} s "
        f"(-> {t_style * scale:.1f} s per {args.n_route} images); baseline full forward "
        f"{t_full:.2f} s; ratio full/style {t_full / t_style:.2f}x"
    )
    print(
        f"route {args.n_route} images incl. style pass: {t_style * scale + t_route:.1f} s "
        f"(torch threads {torch.get_num_threads()})"
    )


if __name__ == "__main__":
    main()
