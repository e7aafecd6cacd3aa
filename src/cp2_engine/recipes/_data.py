"""Bundled-model recipes: parse and validate the TOML, and prepare its training data.

A *bundled-model recipe* (``recipes/cp2_nuclei.toml``) names data sources (real datasets with
committed split id lists, and seeded synthetic images), the network's ``diam_mean``, a step-based
schedule (``[train]``: ``steps = n`` or ``cycles = [n1, n2, ...]``) and the size-model fit
(``[size_model]``). :func:`load_bundled_recipe` turns it into a frozen :class:`BundledRecipe`;
:func:`prepare_data` turns its sources into network-scale training :class:`Item`\\ s: each image
is converted to the 2-channel input, normalised (1-99 percentiles) and resized once so that its
median object diameter becomes ``diam_mean``; flows are computed on the resized labels.
Training itself is :mod:`cp2_engine.recipes._training`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cp2_engine.network import PRECISIONS

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
# data cache layout; bump when the prepared items change (3: centre-aligned label resizing)
CACHE_FORMAT = 3


def default_data_root() -> Path:
    """The shared datasets folder: ``$CP2_DATASETS``, else ``../shared/datasets`` of the repo.

    Examples
    --------
    >>> default_data_root().name
    'datasets'
    """
    env = os.environ.get("CP2_DATASETS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "datasets"


# ----------------------------------------------------------------------------- recipe
@dataclass(frozen=True)
class RealSource:
    """A dataset folder ``<data_root>/<dataset>/train`` with train/validation id lists (CSV)."""

    name: str
    dataset: str
    train_split: Path
    val_split: Path
    channels: tuple
    weight: float = 1.0
    kind: str = "real"


@dataclass(frozen=True)
class SyntheticSource:
    """Seeded :func:`cp2_engine.synthetic.touching_cells` images (``n_val`` more to validate)."""

    name: str
    n_images: int
    seed: int
    shape: tuple
    diameter_range: tuple
    styles: tuple
    nucleus: bool
    channels: tuple
    weight: float = 1.0
    n_val: int = 0
    val_seed: int = 1001
    kind: str = "synthetic"


@dataclass(frozen=True)
class ScheduleConfig:
    """The ``[train]`` table: one entry of ``cycles`` per whole warm-up/constant/anneal cycle."""

    cycles: tuple
    batch_size: int
    bsize: int
    scale_range: float
    learning_rate: float
    momentum: float
    weight_decay: float
    warmup_steps: int
    anneal_fraction: float
    ema_decay: float
    precision: str = "auto"
    checkpoint_seconds: float = 120.0


@dataclass(frozen=True)
class SizeModelConfig:
    """The ``[size_model]`` table (fit at install time)."""

    n_epochs: int = 4
    bsize: int = 224
    max_images: int = 30


@dataclass(frozen=True)
class BundledRecipe:
    """A parsed bundled-model recipe (see :func:`load_bundled_recipe`)."""

    path: Path
    name: str
    diam_mean: float
    seed: int
    sources: tuple
    train: ScheduleConfig
    size_model: SizeModelConfig
    channels: tuple = (0, 0)
    description: str = ""
    license: str = ""


_TOP = {"name", "diam_mean", "seed", "sources", "train"}
_TOP_OPT = {"description", "license", "channels", "size_model"}
_REAL = {"name", "kind", "dataset", "train_split", "val_split", "channels"}
_SYNTH = {"name", "kind", "n_images", "seed", "shape", "diameter_range", "styles", "nucleus",
          "channels"}  # fmt: skip
_TRAIN_OPT = {"steps", "cycles", "precision", "checkpoint_seconds"}
_TRAIN = set(ScheduleConfig.__dataclass_fields__) - _TRAIN_OPT


def _check_keys(table: Any, required: set, optional: set, where: str) -> dict:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table, got {type(table).__name__}")
    missing = sorted(required - set(table))
    if missing:
        raise ValueError(f"{where} lacks the key(s) {missing}")
    unknown = sorted(set(table) - required - optional)
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; expected {sorted(required)}"
                         f" and optionally {sorted(optional)}")  # fmt: skip
    return table


def _split_path(text: str, recipe_dir: Path, where: str) -> Path:
    candidates = [recipe_dir / text, recipe_dir.parent / text]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{where}: split file {text!r} not found (looked in "
                            f"{', '.join(str(c) for c in candidates)})")  # fmt: skip


def _source(table: Any, i: int, recipe_dir: Path, where: str):
    where = f"{where} [[sources]] #{i + 1}"
    kind = table.get("kind") if isinstance(table, dict) else None
    if kind == "real":
        t = _check_keys(table, _REAL, {"weight"}, where)
        return RealSource(
            str(t["name"]), str(t["dataset"]),
            _split_path(t["train_split"], recipe_dir, f"{where} train_split"),
            _split_path(t["val_split"], recipe_dir, f"{where} val_split"),
            tuple(t["channels"]), float(t.get("weight", 1.0)),
        )  # fmt: skip
    if kind == "synthetic":
        t = _check_keys(table, _SYNTH, {"weight", "n_val", "val_seed"}, where)
        return SyntheticSource(
            str(t["name"]), int(t["n_images"]), int(t["seed"]), tuple(t["shape"]),
            tuple(float(d) for d in t["diameter_range"]), tuple(t["styles"]), bool(t["nucleus"]),
            tuple(t["channels"]), float(t.get("weight", 1.0)), int(t.get("n_val", 0)),
            int(t.get("val_seed", 1001)),
        )  # fmt: skip
    raise ValueError(f"{where}: kind must be 'real' or 'synthetic', got {kind!r}")


def _schedule(table: Any, where: str) -> ScheduleConfig:
    t = _check_keys(table, _TRAIN, _TRAIN_OPT | {"bf16"}, where)
    if "bf16" in t:
        if "precision" in t:
            raise ValueError(f"{where}: give 'precision' only ('bf16' is its old spelling)")
        t = dict(t, precision="bf16" if t["bf16"] else "fp32")
        logger.warning("%s: 'bf16 = %s' is deprecated; read as precision = %r", where,
                       str(t["bf16"]).lower(), t["precision"])  # fmt: skip
    if t.get("precision", "auto") not in PRECISIONS:
        raise ValueError(f"{where}: precision must be one of {PRECISIONS}, got "
                         f"{t['precision']!r}")  # fmt: skip
    if ("steps" in t) == ("cycles" in t):
        raise ValueError(f"{where} needs exactly one of 'steps' (one cycle) or 'cycles' (a list)")
    cycles = (t["steps"],) if "steps" in t else tuple(t["cycles"])
    if not cycles or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in cycles):
        raise ValueError(f"{where}: steps/cycles must be positive integers, got {cycles!r}")
    if not 0 <= t["anneal_fraction"] <= 1 or not 0 <= t["ema_decay"] < 1:
        raise ValueError(f"{where}: anneal_fraction must lie in [0, 1] and ema_decay in [0, 1)")
    fields = {k: t[k] for k in _TRAIN | {"precision", "checkpoint_seconds"} if k in t}
    return ScheduleConfig(cycles=cycles, **fields)


def read_recipe_toml(path: str | os.PathLike) -> dict:
    """The parsed TOML of a recipe file, with clear errors for a missing or malformed file.

    Examples
    --------
    >>> read_recipe_toml("no/such/recipe.toml")
    Traceback (most recent call last):
    ...
    FileNotFoundError: recipe not found: no/such/recipe.toml
    """
    try:
        import tomllib
    except ModuleNotFoundError as err:  # Python 3.10
        raise ValueError("recipes need Python >= 3.11 (tomllib)") from err
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"recipe {path} is not valid TOML: {err}") from err


def load_bundled_recipe(path: str | os.PathLike) -> BundledRecipe:
    """Read and validate a bundled-model recipe (TOML with ``[[sources]]``).

    Relative split paths are looked up beside the recipe, then in the folder above it (the
    repository root for ``recipes/*.toml``).

    Raises
    ------
    FileNotFoundError
        The recipe or a split file does not exist.
    ValueError
        Invalid TOML, a missing or unknown key, or an unknown source kind (the message names the
        key and the file).

    Examples
    --------
    >>> r = load_bundled_recipe(REPO_ROOT / "recipes" / "cp2_cyto.toml")  # doctest: +SKIP
    >>> r.name, r.train.cycles  # doctest: +SKIP
    ('cp2_cyto', (660,))
    """
    path = Path(path)
    data = read_recipe_toml(path)
    where = f"recipe {path}"
    _check_keys(data, _TOP, _TOP_OPT, where)
    if not isinstance(data["sources"], list) or not data["sources"]:
        raise ValueError(f"{where}: [[sources]] must list at least one source")
    folder = path.resolve().parent
    sources = tuple(_source(s, i, folder, where) for i, s in enumerate(data["sources"]))
    sm = _check_keys(data.get("size_model", {}), set(), {"n_epochs", "bsize", "max_images"},
                     f"{where} [size_model]")  # fmt: skip
    train = _schedule(data["train"], f"{where} [train]")
    return BundledRecipe(
        path=path, name=str(data["name"]), diam_mean=float(data["diam_mean"]),
        seed=int(data["seed"]), sources=sources, train=train,
        size_model=SizeModelConfig(**sm), channels=tuple(data.get("channels", (0, 0))),
        description=str(data.get("description", "")), license=str(data.get("license", "")),
    )  # fmt: skip


def is_bundled_recipe(path: str | os.PathLike) -> bool:
    """True when the TOML file at ``path`` is a bundled-model recipe (it has ``[[sources]]``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.toml"
    >>> _ = p.write_text("[train]\\nn_epochs = 5\\n")
    >>> is_bundled_recipe(p)
    False
    """
    import tomllib

    try:
        return "sources" in tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False


def read_split(path: Path) -> list[dict]:
    """Rows of a split CSV (columns ``id``, ``type``, ``median_diameter_px``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.csv"
    >>> _ = p.write_text("id,type,median_diameter_px\\na,fluo,12.5\\n")
    >>> read_split(p)[0]["id"]
    'a'
    """
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = {"id", "type", "median_diameter_px"}
    if rows and not need <= set(rows[0]):
        raise ValueError(f"split file {path} needs the columns {sorted(need)}")
    return rows


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Item:
    """One training image at network scale."""

    x: np.ndarray  # (2, H, W) float32, normalised
    labels: np.ndarray  # (H, W) int32
    flows: np.ndarray  # (2, H, W) float32
    source: str


def _at_net_scale(x, labels, diameter: float, diam_mean: float, source: str) -> Item:
    from cp2_engine.inference import resize_image
    from cp2_engine.postprocess import masks_to_flows

    factor = diam_mean / max(diameter, 5.0)
    x = resize_image(x, rescale=factor)
    labels = resize_image(labels, rescale=factor, interpolation="nearest").astype(np.int32)
    return Item(x, labels, np.asarray(masks_to_flows(labels), np.float32), source)


def real_pairs(source: RealSource, data_root: Path, rows: Sequence[dict]):
    """Yield ``(row, image, labels)`` for split rows of a real source (original scale).

    Examples
    --------
    >>> src = RealSource("s", "none", Path("t.csv"), Path("v.csv"), (0, 0))
    >>> list(real_pairs(src, Path("."), []))
    []
    """
    import tifffile

    folder = Path(data_root) / source.dataset / "train"
    if rows and not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} of source {source.name!r} not found; "
                                "give --data ROOT or set CP2_DATASETS")  # fmt: skip
    for row in rows:
        yield (row, tifffile.imread(folder / f"{row['id']}_img.tif"),
               tifffile.imread(folder / f"{row['id']}_masks.tif"))  # fmt: skip


def synthetic_images(source: SyntheticSource, *, seed: int, n: int):
    """Yield ``(style, diameter, SyntheticImage)`` for the first ``n`` images of a source.

    Examples
    --------
    >>> src = SyntheticSource("s", 1, 1, (64, 64), (12.0, 16.0), ("fluorescence",), False, (0, 0))
    >>> style, d, s = next(synthetic_images(src, seed=1, n=1))
    >>> s.image.shape[-2:]
    (64, 64)
    """
    from cp2_engine.synthetic import touching_cells

    rng = np.random.default_rng(seed)
    for i in range(n):
        diameter = float(rng.uniform(*source.diameter_range))
        style = source.styles[i % len(source.styles)]
        s = touching_cells(tuple(source.shape), diameter=diameter, seed=seed * 100_000 + i,
                           style=style, nucleus=source.nucleus)  # fmt: skip
        yield style, diameter, s


def _source_items(source, data_root: Path, diam_mean: float) -> list[Item]:
    from cp2_engine.inference import convert_image

    if source.kind == "real":
        pairs = real_pairs(source, data_root, read_split(source.train_split))
        data = ((img, lab, float(row["median_diameter_px"])) for row, img, lab in pairs)
    else:
        gen = synthetic_images(source, seed=source.seed, n=source.n_images)
        data = ((s.image, s.labels, d) for _, d, s in gen)
    return [
        _at_net_scale(convert_image(img, channels=source.channels, normalize=True), lab, d,
                      diam_mean, source.name)
        for img, lab, d in data
    ]  # fmt: skip


def _data_key(recipe: BundledRecipe) -> str:
    text = json.dumps([recipe.diam_mean, [asdict(s) for s in recipe.sources]], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _cache_dict(key: str, items: Sequence[Item]) -> dict:
    """Items as tensors, strings and lists (loadable with ``weights_only=True``: no pickle)."""
    fields = {name: [torch.from_numpy(np.ascontiguousarray(getattr(it, name))) for it in items]
              for name in ("x", "labels", "flows")}  # fmt: skip
    return {"key": key, "format": CACHE_FORMAT, "source": [it.source for it in items], **fields}


def _read_cache(cache: Path, key: str) -> list | None:
    """The cached items, or None when the cache is stale, old-format or unreadable.

    The arrays are memory-mapped from ``cache`` (copy-on-write), not read into RAM: a batch
    reads the pages of the images it draws, and the OS can drop them again under memory
    pressure, so the prepared data do not count against the training's anonymous memory.
    """
    try:
        stored = torch.load(cache, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # an old pickled cache or a foreign file: rebuild it, never run it
        logger.warning("ignoring data cache %s (%s); rebuilding it", cache, err)
        return None
    if not isinstance(stored, dict):
        return None
    if stored.get("key") != key or stored.get("format") != CACHE_FORMAT:
        return None
    rows = zip(stored["x"], stored["labels"], stored["flows"], stored["source"], strict=True)
    return [Item(x.numpy(), lab.numpy(), fl.numpy(), str(src)) for x, lab, fl, src in rows]


def prepare_data(recipe: BundledRecipe, data_root: Path, *, cache: Path | None = None) -> list:
    """All training :class:`Item`\\ s of a recipe, cached in ``cache`` when given.

    The cache is rebuilt when the recipe's sources or ``diam_mean`` change. With a cache, the
    returned arrays are memory-mapped from it (see :func:`_read_cache`), so training keeps the
    prepared images on disk rather than in RAM.

    Examples
    --------
    >>> items = prepare_data(recipe, Path("data"))  # doctest: +SKIP
    """
    from cp2_engine.util import atomic_write_file

    key = _data_key(recipe)
    if cache is not None and cache.is_file():
        items = _read_cache(cache, key)
        if items is not None:
            logger.info("loading prepared data from %s", cache)
            return items
    t0 = time.perf_counter()
    items = [it for s in recipe.sources for it in _source_items(s, data_root, recipe.diam_mean)]
    if cache is not None:
        atomic_write_file(cache, lambda fh: torch.save(_cache_dict(key, items), fh))
        mapped = _read_cache(cache, key)
        if mapped is not None:  # free the in-RAM copy: train on the memory-mapped file
            items = mapped
    logger.info("prepared %d images in %.0f s", len(items), time.perf_counter() - t0)
    return items


def sampling_weights(items: Sequence[Item], recipe: BundledRecipe) -> np.ndarray:
    """Per-image draw probabilities: each source gets its weight, split evenly over its images.

    Examples
    --------
    >>> sampling_weights([], recipe)  # doctest: +SKIP
    """
    names = np.array([it.source for it in items])
    weights = np.zeros(len(items))
    for source in recipe.sources:
        hit = names == source.name
        weights[hit] = source.weight / max(1, int(hit.sum()))
    if weights.sum() <= 0:
        raise ValueError(f"recipe {recipe.path}: no training images (or all weights are 0)")
    return weights / weights.sum()
