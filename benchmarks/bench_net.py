"""Benchmark the CPnet forward pass: cp2's runtimes and precisions against Cellpose's CPnet.

cp2 variants (``cp2_engine.network.get_runner``): torch eager fp32 (plain and channels-last),
torch bf16 autocast, the exact path (fp32 on the default backend: OpenVINO where installed) and
the default (``precision="auto"``: bf16 where the CPU computes it natively, else fp32). Runtime
start-up (ONNX export + OpenVINO compile) happens in the warm-up and is timed separately by
``benchmarks/bench_startup.py``.

Both sides use the same weights, input, thread count and glibc allocator setting:

* ``default``: glibc defaults (large activation buffers are mmapped and returned to the OS
  after every forward, then page-faulted in again);
* ``tuned``: ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` raised so freed memory is
  kept (see docs and ``/work/shared/reference/performance-notes.md``).

One worker process, run by the reference Cellpose venv (``CP2_CELLPOSE_PYTHON`` or
``.venv-cellpose/bin/python``, same torch version; cp2 is imported from ``src/``), times every
variant round-robin, so load drift on a shared machine hits all of them alike; the speed-up is
the median of the per-round ratios. Cellpose is timed as a plain ``CPnet`` forward and, as in
its CPU inference, with the module converted to mkldnn before each batch. The error column is
the max abs difference of the output from cp2 fp32.

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
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}
CP2_VARIANTS = {
    "cp2 torch fp32": {"precision": "fp32", "backend": "torch", "channels_last": False},
    "cp2 torch fp32 CL": {"precision": "fp32", "backend": "torch", "channels_last": True},
    "cp2 torch bf16 CL": {"precision": "bf16", "backend": "torch", "channels_last": True},
    "cp2 exact": {"precision": "fp32", "backend": "auto"},
    "cp2 default": {"precision": "auto", "backend": "auto"},
}


def _variants(folder: Path) -> dict:
    """Forward functions to time: cp2 variants and, when importable, Cellpose's CPnet."""
    from cp2_engine.network import (
        build_net_from_state,
        cpu_has_native_bf16,
        get_runner,
        load_state_dict,
    )

    state = load_state_dict(folder / "weights")
    fns = {}
    for label, flags in CP2_VARIANTS.items():
        if flags["precision"] == "bf16" and not cpu_has_native_bf16():
            print(f"{label}: skipped (no native bf16 on this CPU)", file=sys.stderr)
            continue
        net = build_net_from_state(state).eval()
        runner = get_runner(net, **flags)
        print(f"{label}: backend {runner.backend}, precision {runner.precision}", file=sys.stderr)
        fns[label] = lambda x, runner=runner, net=net: runner(x)[0]
    try:
        from cellpose.resnet_torch import CPnet as ReferenceNet
    except ImportError:
        return fns
    import torch
    from torch.utils import mkldnn as mkldnn_utils

    ref = ReferenceNet(nbase=[2, 32, 64, 128, 256], nout=3, sz=3)
    ref.load_state_dict(torch.load(folder / "weights", weights_only=True), strict=True)
    ref.eval()
    fns["cellpose"] = lambda x: ref(x)[0]
    kref = ReferenceNet(nbase=[2, 32, 64, 128, 256], nout=3, sz=3, mkldnn=True)
    kref.load_state_dict(torch.load(folder / "weights", weights_only=True), strict=True)
    kref.eval()

    def mkldnn_forward(x):  # as Cellpose 3 does on the CPU: convert the module every batch
        y = mkldnn_utils.to_mkldnn(kref)(x)[0]
        return y.to_dense() if y.is_mkldnn else y

    fns["cellpose mkldnn"] = mkldnn_forward
    return fns


def _worker(folder: Path, repeats: int, threads: int) -> None:
    """Time all variants round-robin (one warm-up each) so load drift hits them alike."""
    import torch

    torch.set_num_threads(threads)
    x = torch.from_numpy(np.load(folder / "x.npy"))
    fns = _variants(folder)
    times = {label: [] for label in fns}
    with torch.no_grad():
        for label, fn in fns.items():
            y = fn(x)
            np.save(folder / f"{label.replace(' ', '_')}_y.npy", y.float().numpy())
        for _ in range(repeats):
            for label, fn in fns.items():
                t0 = time.perf_counter()
                fn(x)
                times[label].append(time.perf_counter() - t0)
    print(json.dumps(times))


def _prepare(folder: Path, batch: int, size: int) -> None:
    """Write seeded random weights (with non-trivial BN statistics) and an input batch."""
    import torch

    from cp2_engine.network import CPnet, save_model

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
    base = np.load(folder / "cp2_torch_fp32_y.npy")
    errors = {"cp2 torch fp32": 0.0}
    for label in [*list(CP2_VARIANTS)[1:], "cellpose", "cellpose mkldnn"]:
        path = folder / f"{label.replace(' ', '_')}_y.npy"
        if path.exists():
            errors[label] = float(np.abs(np.load(path) - base).max())
    return errors


def _bench_setting(folder: Path, setting: str, args, cellpose: str | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for key in [*TUNED_MALLOC, "CP2_BACKEND", "CP2_PRECISION"]:  # time what users get
        env.pop(key, None)
    if setting == "tuned":
        env.update(TUNED_MALLOC)
    python = cellpose or sys.executable
    cmd = [python, __file__, "--worker", str(folder), "--repeats", str(args.repeats)]
    return _run_json([*cmd, "--threads", str(args.threads)], env)


def _print_table(setting: str, times: dict, errors: dict, scale: float) -> None:
    base = times.get("cellpose")
    print(f"\nallocator: {setting}  (max |y| of the fp32 output = {scale:.3f})")
    print(f"{'variant':<24} {'median s':>9} {'speed-up vs cellpose':>21} {'max abs err':>12}")
    for label, runs in times.items():
        ratio = "n/a"
        if base:  # median of per-round ratios: robust to load drift between rounds
            ratio = f"{statistics.median(b / t for b, t in zip(base, runs)):.2f}x"
        err = errors.get(label)
        err_text = f"{err:.2e}" if err is not None else "n/a"
        print(f"{label:<24} {statistics.median(runs):>9.3f} {ratio:>21} {err_text:>12}")


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
        sys.path.insert(0, str(REPO / "src"))  # the Cellpose venv does not install cp2
        _worker(args.worker, args.repeats, args.threads)
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
            scale = float(np.abs(np.load(folder / "cp2_torch_fp32_y.npy")).max())
            _print_table(setting, times, _errors(folder), scale)
    eager = times["cp2 torch fp32"]
    exact, default = (
        statistics.median(e / t for e, t in zip(eager, times[k]))
        for k in ("cp2 exact", "cp2 default")
    )
    print(f"RESULT network vs torch eager fp32: exact {exact:.2f}x, default {default:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
