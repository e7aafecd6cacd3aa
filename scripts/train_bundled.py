"""Train one of cp2's bundled models (cp2_nuclei, cp2_cyto) from its recipe, resumably.

One command retrains a bundled model from the shared data::

    python scripts/train_bundled.py recipes/cp2_nuclei.toml --out /work/ckpt/cp2_nuclei
    python scripts/train_bundled.py recipes/cp2_nuclei.toml --out /work/ckpt/cp2_nuclei --install

The first call trains (and resumes from ``<out>/train.ckpt`` when it exists); ``--install``
writes the exported weights as float16 into ``src/cp2_engine/models/<name>`` with a size model
(``<name>_size.npy``) and a metadata sidecar (``<name>.json``: data, recipe, steps, seed,
validation AP, sha256, training cost).

Why not ``cp2 train --recipe``: the bundled recipes need things ``cp2 train`` does not take:
a network ``diam_mean`` other than 30 (17 for nuclei), train/validation id lists, several data
sources with their own channels, synthetic images, and step-based checkpoints (an "epoch" of
452 DSB images is 30+ minutes on a loaded 2-core CPU). The network, augmentation, flows and
loss are the engine's own (:mod:`cp2_engine.net`, :mod:`cp2_engine.augment`,
:mod:`cp2_engine.flows`, :mod:`cp2_engine.losses`).

Data preparation: each real image is converted to the 2-channel network input, normalised
(1-99 percentiles), and resized once so that its median object diameter becomes the net's
``diam_mean``; flows are computed on the resized labels. Each step draws a batch (seeded with
``(seed, step)``, so a resumed run replays exactly), augments it with random rotation, flip,
scale jitter and crop, and takes one SGD step (optionally under bfloat16 autocast). The learning
rate warms up linearly, stays constant and decays linearly to zero over the last
``anneal_fraction`` of the steps; an exponential moving average (EMA) of the weights is kept and
exported.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import tomllib
import torch

from cp2_engine._device import resolve_device
from cp2_engine.augment import random_rotate_and_resize
from cp2_engine.flows import masks_to_flows
from cp2_engine.losses import flow_loss
from cp2_engine.net import CPnet
from cp2_engine.synthetic import touching_cells
from cp2_engine.transforms import convert_image, resize_image

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "src" / "cp2_engine" / "models"
DEFAULT_DATA = Path("/work/shared/datasets")
AUTO_MAX = 4  # images per type validated with the size model's diameter (CPU time)
TIME_PROBE_STEPS = 200  # steps timed before --time-budget fixes the number of steps
logger = logging.getLogger("train_bundled")


# ----------------------------------------------------------------------------- recipe / data
def load_recipe(path: Path) -> dict:
    """Read and minimally check a bundled-model recipe (TOML)."""
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    recipe = tomllib.loads(path.read_text(encoding="utf-8"))
    for key in ("name", "diam_mean", "seed", "sources", "train"):
        if key not in recipe:
            raise ValueError(f"recipe {path} lacks the key {key!r}")
    return recipe


def read_split(path: Path) -> list[dict]:
    """Rows (id, type, median_diameter_px) of a committed split file."""
    with open(REPO / path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@dataclass(frozen=True)
class Item:
    """One training image at network scale."""

    x: np.ndarray  # (2, H, W) float32, normalised
    labels: np.ndarray  # (H, W) int32
    flows: np.ndarray  # (2, H, W) float32
    source: str


def _at_net_scale(x, labels, diameter: float, diam_mean: float, source: str) -> Item:
    factor = diam_mean / max(diameter, 5.0)
    x = resize_image(x, rescale=factor)
    labels = resize_image(labels, rescale=factor, interpolation="nearest").astype(np.int32)
    return Item(x, labels, np.asarray(masks_to_flows(labels), np.float32), source)


def load_real(root: Path, source: dict, diam_mean: float) -> list[Item]:
    """Load the train split of one real dataset at network scale."""
    folder = root / source["dataset"] / "train"
    items = []
    for row in read_split(Path(source["train_split"])):
        img = tifffile.imread(folder / f"{row['id']}_img.tif")
        lab = tifffile.imread(folder / f"{row['id']}_masks.tif")
        x = convert_image(img, channels=tuple(source["channels"]), normalize=True)
        diameter = float(row["median_diameter_px"])
        items.append(_at_net_scale(x, lab, diameter, diam_mean, source["name"]))
    return items


def load_synthetic(source: dict, diam_mean: float) -> list[Item]:
    """Generate seeded synthetic images (cytoplasm + nucleus channels) at network scale."""
    items = []
    rng = np.random.default_rng(source["seed"])
    styles = source["styles"]
    for i in range(source["n_images"]):
        diameter = float(rng.uniform(*source["diameter_range"]))
        s = touching_cells(
            tuple(source["shape"]),
            diameter=diameter,
            seed=int(source["seed"]) * 100_000 + i,
            style=styles[i % len(styles)],
            nucleus=bool(source["nucleus"]),
        )
        x = convert_image(s.image, channels=tuple(source["channels"]), normalize=True)
        items.append(_at_net_scale(x, s.labels, diameter, diam_mean, source["name"]))
    return items


def prepare_data(recipe: dict, root: Path, cache: Path) -> list[Item]:
    """All training items, cached in ``cache`` (a pickle of the arrays) for fast resumes."""
    if cache.is_file():
        logger.info("loading prepared data from %s", cache)
        return torch.load(cache, weights_only=False)
    t0 = time.perf_counter()
    items = []
    for source in recipe["sources"]:
        if source["kind"] == "real":
            items += load_real(root, source, recipe["diam_mean"])
        else:
            items += load_synthetic(source, recipe["diam_mean"])
    _atomic(cache, lambda fh: torch.save(items, fh))
    logger.info("prepared %d images in %.0f s", len(items), time.perf_counter() - t0)
    return items


# ----------------------------------------------------------------------------- training
def learning_rate(step: int, cfg: dict) -> float:
    """Linear warm-up, constant, then a linear decay to 0 over the last anneal_fraction."""
    lr, steps, warm = cfg["learning_rate"], cfg["steps"], cfg["warmup_steps"]
    start = int(steps * (1 - cfg["anneal_fraction"]))
    if step < warm:
        return lr * (step + 1) / warm
    if step >= start:
        return lr * (steps - step) / max(1, steps - start)
    return lr


def ema_decay(step: int, cfg: dict) -> float:
    """EMA decay: 0 during warm-up, then ramping up to ``ema_decay`` (short early averages)."""
    k = step - cfg["warmup_steps"]
    if k < 0:
        return 0.0
    return min(cfg["ema_decay"], (1 + k) / (10 + k))


def sampling_weights(items: list[Item], recipe: dict) -> np.ndarray:
    """Per-image draw probabilities: each source gets its recipe weight, split evenly."""
    weights = np.zeros(len(items))
    for source in recipe["sources"]:
        idx = [i for i, it in enumerate(items) if it.source == source["name"]]
        weights[idx] = source.get("weight", 1.0) / max(1, len(idx))
    return weights / weights.sum()


class StepBatches(torch.utils.data.Dataset):
    """Map a step number to its augmented batch, so batches can be made in worker processes."""

    def __init__(self, items, probs, recipe: dict) -> None:
        self.items, self.probs, self.recipe = items, probs, recipe

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, step: int):
        return make_batch(self.items, self.probs, step, self.recipe)


def _batches(items, probs, recipe: dict, start: int, workers: int):
    """Batches for steps ``start, start + 1, ...``: inline, or prefetched by worker processes."""
    dataset = StepBatches(items, probs, recipe)
    if workers <= 0:
        return (dataset[step] for step in range(start, 10**9))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start, 10**9), num_workers=workers,
        prefetch_factor=8, pin_memory=torch.cuda.is_available(),
        worker_init_fn=lambda _: torch.set_num_threads(1),
    )  # fmt: skip
    return iter(loader)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"1 GPU ({torch.cuda.get_device_name(device)}), bfloat16 autocast"
    return f"{torch.get_num_threads()} CPU threads (AMD EPYC, AVX-512 BF16), no GPU"


def make_batch(items, probs, step: int, recipe: dict):
    """The augmented batch of ``step`` (seeded by ``(seed, step)``)."""
    cfg = recipe["train"]
    rng = np.random.default_rng([recipe["seed"], step])
    idx = rng.choice(len(items), size=cfg["batch_size"], p=probs)
    batch = random_rotate_and_resize(
        [items[i].x for i in idx],
        [items[i].labels for i in idx],
        [items[i].flows for i in idx],
        rng=rng,
        bsize=cfg["bsize"],
        scale_range=cfg["scale_range"],
    )
    return batch.images, batch.target()


def _atomic(path: Path, writer) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_state(recipe: dict) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe["seed"])
        net = CPnet(diam_mean=float(recipe["diam_mean"]))
    cfg = recipe["train"]
    opt = torch.optim.SGD(
        net.parameters(), lr=cfg["learning_rate"], momentum=cfg["momentum"],
        weight_decay=cfg["weight_decay"],
    )  # fmt: skip
    ema = {k: v.detach().clone().float() for k, v in net.state_dict().items()}
    return {
        "net": net,
        "opt": opt,
        "ema": ema,
        "step": 0,
        "losses": [],
        "seconds": 0.0,
        "total_steps": None,
        "hardware": None,
        "init": None,
    }


def _load_state(path: Path, recipe: dict) -> dict:
    state = _new_state(recipe)
    if not path.is_file():
        return state
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state["net"].load_state_dict(ckpt["net"])
    state["opt"].load_state_dict(ckpt["opt"])
    state.update(ema=ckpt["ema"], step=ckpt["step"], losses=ckpt["losses"])
    state["seconds"] = ckpt["seconds"]
    state["total_steps"] = ckpt.get("total_steps")
    state["hardware"] = ckpt.get("hardware")
    state["init"] = ckpt.get("init")
    logger.info("resumed from %s at step %d", path, state["step"])
    return state


def _save_state(path: Path, state: dict) -> None:
    ckpt = {
        "net": state["net"].state_dict(),
        "opt": state["opt"].state_dict(),
        "ema": state["ema"],
        "step": state["step"],
        "losses": state["losses"],
        "seconds": state["seconds"],
        "total_steps": state["total_steps"],
        "hardware": state["hardware"],
        "init": state["init"],
    }
    _atomic(path, lambda fh: torch.save(ckpt, fh))


def _update_ema(ema: dict, net: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        floats, sources = [], []
        for k, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                floats.append(ema[k])
                sources.append(v.detach().float())
            else:
                ema[k].copy_(v)
        torch._foreach_mul_(floats, decay)
        torch._foreach_add_(floats, sources, alpha=1 - decay)


def _autocast(device: torch.device, cfg: dict):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cfg["bf16"]:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_steps(
    items: list[Item], recipe: dict, out: Path, *, device: torch.device | None = None,
    workers: int = 0, time_budget: float | None = None, probe_steps: int = TIME_PROBE_STEPS,
    init: Path | None = None,
) -> dict:  # fmt: skip
    """Run (or resume) training up to ``recipe['train']['steps']``; return the final state.

    With ``time_budget`` (seconds of training), the number of steps is fixed after the first
    200 steps from their measured speed, and kept in the checkpoint so a resume keeps the same
    schedule.
    """
    cfg = recipe["train"]
    device = device or torch.device("cpu")
    ckpt_path = out / "train.ckpt"
    state = _load_state(ckpt_path, recipe)
    if state["total_steps"]:
        cfg["steps"] = state["total_steps"]
    if init is not None and state["step"] == 0:
        _initialise(state, init)
    state["hardware"] = state["hardware"] or _hardware(device)
    net, opt = state["net"].to(device), state["opt"]
    _optimizer_to(opt, device)
    state["ema"] = {k: v.to(device) for k, v in state["ema"].items()}
    net.diam_labels.data.fill_(float(recipe["diam_mean"]))
    probs = sampling_weights(items, recipe)
    batches = _batches(items, probs, recipe, state["step"], workers)
    net.train()
    last_save = t_prev = time.perf_counter()
    t_start, step_start = t_prev, state["step"]
    with open(out / "train_log.jsonl", "a", encoding="utf-8") as log:
        while state["step"] < cfg["steps"]:
            step = state["step"]
            lr = learning_rate(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            x, target = next(batches)
            x, target = x.to(device, non_blocking=True), target.to(device, non_blocking=True)
            with _autocast(device, cfg):
                y = net(x)[0]
            loss = flow_loss(y.float(), target)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _update_ema(state["ema"], net, ema_decay(step, cfg))
            now = time.perf_counter()
            state["seconds"] += now - t_prev
            t_prev = now
            state["step"] = step + 1
            state["losses"].append(value)
            if (
                time_budget
                and state["total_steps"] is None
                and step + 1 - step_start == probe_steps
            ):
                rate = probe_steps / (now - t_start)
                cfg["steps"] = state["total_steps"] = max(
                    step + 1, int((time_budget - (now - t_start)) * rate) + step + 1
                )
                logger.info("%.1f steps/s: training for %d steps in all", rate, cfg["steps"])
            log.write(json.dumps({"step": step, "loss": value, "lr": lr,
                                  "seconds": round(state["seconds"], 1)}) + "\n")  # fmt: skip
            if now - last_save > cfg["checkpoint_seconds"] or state["step"] == cfg["steps"]:
                log.flush()
                _save_state(ckpt_path, state)
                last_save = now
                logger.info("step %d loss %.4f (mean of last 50: %.4f) lr %.4g, %.0f s",
                            state["step"], value, np.mean(state["losses"][-50:]), lr,
                            state["seconds"])  # fmt: skip
    state["total_steps"] = cfg["steps"]
    return state


def _initialise(state: dict, init: Path) -> None:
    """Start a new run (a further cycle of the schedule) from an exported model's weights."""
    from cp2_engine.weights import load_state_dict, sha256_file

    weights = load_state_dict(init)
    state["net"].load_state_dict(weights)
    state["ema"] = {k: v.detach().clone().float() for k, v in state["net"].state_dict().items()}
    sidecar = Path(str(init) + ".json")
    previous = json.loads(sidecar.read_text())["training"] if sidecar.is_file() else {}
    state["init"] = {"file": init.name, "sha256": sha256_file(init), "training": previous}
    logger.info("initialised from %s", init)


def _optimizer_to(opt: torch.optim.Optimizer, device: torch.device) -> None:
    for per_param in opt.state.values():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                per_param[key] = value.to(device)


# ----------------------------------------------------------------------------- export
def exported_net(ckpt: dict, recipe: dict, *, which: str = "ema") -> CPnet:
    """A CPnet holding the EMA (default) or the raw weights of a training checkpoint."""
    if which not in ("ema", "raw"):
        raise ValueError(f"which must be 'ema' or 'raw', got {which!r}")
    net = CPnet(diam_mean=float(recipe["diam_mean"]))
    net.load_state_dict(ckpt["ema"] if which == "ema" else ckpt["net"])
    net.diam_labels.data.fill_(float(recipe["diam_mean"]))
    return net.eval()


def _raw_training_images(recipe: dict, root: Path, limit: int) -> tuple[list, list, tuple]:
    """Up to ``limit`` original-scale training images per source (for the size model)."""
    images, labels, channels = [], [], None
    for source in recipe["sources"]:
        if source["kind"] == "real":
            rows = read_split(Path(source["train_split"]))
            folder = root / source["dataset"] / "train"
            for row in rows[:: max(1, len(rows) // limit)][:limit]:
                images.append(tifffile.imread(folder / f"{row['id']}_img.tif"))
                labels.append(tifffile.imread(folder / f"{row['id']}_masks.tif"))
        channels = channels or tuple(source["channels"])
    return images, labels, channels


def _data_record(recipe: dict) -> list[dict]:
    record = []
    for source in recipe["sources"]:
        entry = {k: source[k] for k in ("name", "kind", "channels") if k in source}
        if source["kind"] == "real":
            entry["train_split"] = source["train_split"]
            entry["val_split"] = source["val_split"]
            entry["n_train"] = len(read_split(Path(source["train_split"])))
        else:
            entry.update({k: source[k] for k in ("n_images", "seed", "styles", "nucleus")})
        record.append(entry)
    return record


def install(
    recipe: dict, recipe_path: Path, out: Path, root: Path, *, which: str = "ema",
    models_dir: Path = MODELS_DIR, max_per_type: int | None = None, device: str = "cpu",
) -> None:  # fmt: skip
    """Export the checkpoint as float16 weights + size model + sidecar into the package."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from eval_bundled import evaluate, summarise

    from cp2_engine.model import Model
    from cp2_engine.train import train_size_model
    from cp2_engine.weights import save_model, sha256_file

    ckpt = torch.load(out / "train.ckpt", map_location="cpu", weights_only=False)
    net16 = exported_net(ckpt, recipe, which=which).half()
    # exactly what a user gets after the fp16 round trip
    net = copy.deepcopy(net16).float().to(resolve_device(device))
    t0 = time.perf_counter()
    sm_cfg = recipe["size_model"]
    images, labels, channels = _raw_training_images(recipe, root, sm_cfg["max_images"])
    size_model = train_size_model(net, images, labels, channels=channels, seed=recipe["seed"],
                                  n_epochs=sm_cfg["n_epochs"], bsize=sm_cfg["bsize"])  # fmt: skip
    size_seconds = time.perf_counter() - t0
    model = Model.from_net(net, size_model=size_model, name=recipe["name"])
    if device != "cpu":  # GPU numerics differ slightly: report what a CPU user gets
        logger.info("validating on %s; the README's numbers come from a CPU run", device)
    validation = {}
    limits = {"gt": max_per_type, "auto": min(max_per_type or AUTO_MAX, AUTO_MAX)}
    for mode, limit in limits.items():
        records = evaluate(model, recipe, root=root, diameter=mode, max_per_type=limit)
        validation[f"diameter_{mode}"] = summarise(records)
        logger.info("validation (diameter=%s): %s", mode, validation[f"diameter_{mode}"]["all"])
    cfg = recipe["train"]
    n_real = sum(e.get("n_train", e.get("n_images", 0)) for e in _data_record(recipe))
    meta = {
        "name": recipe["name"],
        "description": recipe["description"],
        "license": recipe["license"],
        "channels": list(recipe["channels"]),
        "storage": "float16 (upcast to float32 on load)",
        "data": _data_record(recipe),
        "recipe": str(recipe_path),
        "recipe_sha256": sha256_file(recipe_path),
        "training": {
            "steps": ckpt["step"], "batch_size": cfg["batch_size"], "bsize": cfg["bsize"],
            "epochs_equivalent": round(ckpt["step"] * cfg["batch_size"] / n_real, 2),
            "seed": recipe["seed"], "exported": which, "final_loss_mean50":
            round(float(np.mean(ckpt["losses"][-50:])), 4),
            "train_seconds": round(ckpt["seconds"]), "size_model_seconds": round(size_seconds),
            "hardware": ckpt.get("hardware") or "2 shared CPU cores (AMD EPYC), no GPU",
            "initialised_from": ckpt.get("init"),
        },
        "validation": validation,
        "validation_note": "mean AP over validation images; diameter_gt = annotated median "
        "diameter given, diameter_auto = size-model estimate"
        + (f"; gt: at most {max_per_type} images per type" if max_per_type else "")
        + f"; auto: at most {limits['auto']} images per type (CPU time)",
    }  # fmt: skip
    models_dir.mkdir(parents=True, exist_ok=True)
    dest = models_dir / recipe["name"]
    size_model.save(Path(str(dest) + "_size.npy"))
    save_model(net16, dest, metadata=meta)
    for path in (dest, Path(str(dest) + ".json"), Path(str(dest) + "_size.npy")):
        path.chmod(0o644)
    logger.info("installed %s (%.1f MB)", dest, dest.stat().st_size / 1e6)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for checkpoints/logs")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared datasets root")
    parser.add_argument("--steps", type=int, help="override the recipe's number of steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--workers", type=int, default=0, help="batch-making processes")
    parser.add_argument("--time-budget", type=float, help="seconds: fix the steps to fit")
    parser.add_argument(
        "--probe-steps",
        type=int,
        default=TIME_PROBE_STEPS,
        help="steps timed before --time-budget fixes the number of steps",
    )
    parser.add_argument("--init", type=Path, help="start a new run from these weights")
    parser.add_argument("--prepare-only", action="store_true", help="only build the data cache")
    parser.add_argument("--install", action="store_true", help="export into the package")
    parser.add_argument("--export", choices=("ema", "raw"), default="ema")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="install target")
    parser.add_argument("--export-to", type=Path, help="only write the exported weights here")
    parser.add_argument("--max-per-type", type=int, help="validate on at most N images per type")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    if args.steps is not None:
        recipe["train"]["steps"] = args.steps
    args.out.mkdir(parents=True, exist_ok=True)
    if args.export_to:
        from cp2_engine.weights import save_model

        ckpt = torch.load(args.out / "train.ckpt", map_location="cpu", weights_only=False)
        save_model(exported_net(ckpt, recipe, which=args.export), args.export_to,
                   metadata={"training": {"steps": ckpt["step"]}})  # fmt: skip
        return 0
    if args.install:
        install(recipe, args.recipe, args.out, args.data, which=args.export,
                models_dir=args.models_dir, max_per_type=args.max_per_type,
                device=args.device)  # fmt: skip
        return 0
    items = prepare_data(recipe, args.data, args.out / "data.pt")
    if args.prepare_only:
        return 0
    train_steps(items, recipe, args.out, device=resolve_device(args.device),
                workers=args.workers, time_budget=args.time_budget,
                probe_steps=args.probe_steps, init=args.init)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
