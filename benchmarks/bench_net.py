"""Benchmark the CPnet forward pass: cp2 (fp32, channels-last, bf16) against Cellpose's CPnet.

Both sides run in fresh subprocesses with the same weights, the same input, the same thread
count and the same glibc allocator settings, so their ratio is meaningful on a shared machine:

* ``default``: glibc defaults (large activation buffers are mmapped and returned to the OS
  after every forward, then page-faulted in again);
* ``tuned``: ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` raised so freed memory is
  kept (see docs and ``/work/shared/reference/performance-notes.md``).

The reference Cellpose runs from its own venv (``CP2_CELLPOSE_PYTHON`` or
``.venv-cellpose/bin/python``); it is timed as a plain ``CPnet`` forward and, as in its CPU
inference, with the module converted to mkldnn before each batch.

Usage::

    python benchmarks/bench_net.py            # 8x2x224x224, both allocator settings
    python benchmarks/bench_net.py --quick    # 2x2x224x224, tuned allocator only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}
CP2_VARIANTS = {
    "cp2 fp32": {},
    "cp2 channels_last": {"channels_last": True},
    "cp2 bf16": {"bf16": True},
    "cp2 bf16+channels_last": {"bf16": True, "channels_last": True},
}

_CELLPOSE_WORKER = textwrap.dedent(
    """
    import json, statistics, sys, time
    import numpy as np
    import torch
    from cellpose.resnet_torch import CPnet

    folder, repeats, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    x = torch.from_numpy(np.load(folder + "/x.npy"))
    state = torch.load(folder + "/weights", weights_only=True)

    def timed(fn):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), out

    net = CPnet(nbase=[2, 32, 64, 128, 256], nout=3, sz=3)
    net.load_state_dict(state, strict=True)
    net.eval()
    with torch.no_grad():
        t, out = timed(lambda: net(x)[0])
    np.save(folder + "/cellpose_y.npy", out.numpy())
    result = {"cellpose": t}
    try:
        from torch.utils import mkldnn as mkldnn_utils

        knet = CPnet(nbase=[2, 32, 64, 128, 256], nout=3, sz=3, mkldnn=True)
        knet.load_state_dict(state, strict=True)
        knet.eval()

        def mkldnn_forward():
            y = mkldnn_utils.to_mkldnn(knet)(x)[0]
            return y.to_dense() if y.is_mkldnn else y

        with torch.no_grad():
            t, out = timed(mkldnn_forward)
        np.save(folder + "/cellpose_mkldnn_y.npy", out.numpy())
        result["cellpose mkldnn"] = t
    except (RuntimeError, AttributeError, TypeError) as err:
        print("mkldnn path failed:", err, file=sys.stderr)
    print(json.dumps(result))
    """
)


def _cp2_worker(folder: Path, repeats: int, threads: int) -> None:
    """Time every cp2 variant (run in a subprocess) and save its outputs."""
    import torch

    from cp2_engine.net import inference_forward
    from cp2_engine.weights import build_net_from_state, load_state_dict

    torch.set_num_threads(threads)
    x = torch.from_numpy(np.load(folder / "x.npy"))
    result = {}
    for label, flags in CP2_VARIANTS.items():
        net = build_net_from_state(load_state_dict(folder / "weights")).eval()
        inference_forward(net, x, **flags)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            y, _ = inference_forward(net, x, **flags)
            times.append(time.perf_counter() - t0)
        result[label] = statistics.median(times)
        np.save(folder / f"{label.replace(' ', '_')}_y.npy", y.numpy())
    print(json.dumps(result))


def _prepare(folder: Path, batch: int, size: int) -> None:
    """Write seeded random weights (with non-trivial BN statistics) and an input batch."""
    import torch

    from cp2_engine.net import CPnet
    from cp2_engine.weights import save_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = CPnet()
    gen = torch.Generator().manual_seed(1)
    for name, buf in net.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=gen) * 0.2)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
    save_model(net, folder / "weights")
    rng = np.random.default_rng(2)
    np.save(folder / "x.npy", rng.normal(size=(batch, 2, size, size)).astype(np.float32))


def _run_json(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    if proc.stderr.strip():
        sys.stderr.write(proc.stderr[-1000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cellpose_python() -> str | None:
    path = os.environ.get("CP2_CELLPOSE_PYTHON", str(REPO / ".venv-cellpose/bin/python"))
    return path if Path(path).exists() else None


def _errors(folder: Path) -> dict[str, float]:
    base = np.load(folder / "cp2_fp32_y.npy")
    errors = {"cp2 fp32": 0.0}
    for label in [*list(CP2_VARIANTS)[1:], "cellpose", "cellpose mkldnn"]:
        path = folder / f"{label.replace(' ', '_')}_y.npy"
        if path.exists():
            errors[label] = float(np.abs(np.load(path) - base).max())
    return errors


def _bench_setting(folder: Path, setting: str, args, cellpose: str | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for key in TUNED_MALLOC:
        env.pop(key, None)
    if setting == "tuned":
        env.update(TUNED_MALLOC)
    worker = [sys.executable, __file__, "--worker", str(folder)]
    times = _run_json(
        [*worker, "--repeats", str(args.repeats), "--threads", str(args.threads)], env
    )
    if cellpose:
        script = folder / "cellpose_worker.py"
        script.write_text(_CELLPOSE_WORKER)
        cmd = [cellpose, str(script), str(folder), str(args.repeats), str(args.threads)]
        times.update(_run_json(cmd, env))
    return times


def _print_table(setting: str, times: dict, errors: dict, scale: float) -> None:
    base = times.get("cellpose")
    print(f"\nallocator: {setting}  (max |y| of fp32 output = {scale:.3f})")
    print(f"{'variant':<24} {'median s':>9} {'vs cellpose':>12} {'max abs err vs cp2 fp32':>24}")
    for label, t in times.items():
        ratio = f"{base / t:.2f}x" if base else "n/a"
        err = errors.get(label)
        err_text = f"{err:.2e}" if err is not None else "n/a"
        print(f"{label:<24} {t:>9.3f} {ratio:>12} {err_text:>24}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table per allocator setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 2, 2 repeats, tuned only")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _cp2_worker(args.worker, args.repeats, args.threads)
        return 0
    settings = ["default", "tuned"]
    if args.quick:
        args.batch, args.repeats, settings = 2, 2, ["tuned"]
    cellpose = _cellpose_python()
    print(
        f"CPnet forward, input {args.batch}x2x{args.size}x{args.size} float32, "
        f"{args.threads} threads, median of {args.repeats} after 1 warm-up"
    )
    if cellpose is None:
        print("reference cellpose venv not found: cp2 rows only")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _prepare(folder, args.batch, args.size)
        for setting in settings:
            times = _bench_setting(folder, setting, args, cellpose)
            scale = float(np.abs(np.load(folder / "cp2_fp32_y.npy")).max())
            _print_table(setting, times, _errors(folder), scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
