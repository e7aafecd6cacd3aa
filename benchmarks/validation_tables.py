"""Regenerate the bundled models' validation tables (estimated and annotated diameter).

One command evaluates each bundled model on its whole validation split twice, with the
annotated diameter (each image's median mask diameter, ``gt``) and with the diameter a user
gets from ``diameter=None`` (size model, then the masks re-measured to a fixed point: ``auto``),
and records per image both diameters, the size model's first guess and the AP at 0.5 / 0.75 /
0.9. It writes

- ``docs/validation/<model>.json``: every per-image record, the summaries, date, machine,
  commit and command;
- the marked section of ``docs/bundled_models.md`` (between ``<!-- validation-tables:begin``
  and ``<!-- validation-tables:end -->``): per model and image type the diameter error
  (median ``|log(estimated / annotated)|``) and the AP with both diameters, with the gap;
- the marked compact table in ``README.md`` (``<!-- readme-model-table:begin``/``end``).

Each file is replaced atomically; text outside the markers is kept. The evaluation code is
:func:`cp2_engine.recipes.evaluate` / :func:`summarise` / :func:`diameter_errors` (the same as
``benchmarks/eval_bundled.py`` and ``cp2 train --install``).

Usage::

    python benchmarks/validation_tables.py                    # both models, full splits
    python benchmarks/validation_tables.py --threads 1        # lighter on a shared machine
    python benchmarks/validation_tables.py --models cp2_cyto --max-per-type 1 --no-docs
    python benchmarks/validation_tables.py --from-json        # re-render docs from the JSON
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("cp2_nuclei", "cp2_cyto")
GAP_TARGET = 0.02  # target: estimated-diameter AP@0.5 within this of the annotated one
DOC_MARK = "validation-tables"
README_MARK = "readme-model-table"


# ----------------------------------------------------------------------------- provenance
def machine() -> str:
    """CPU model, usable cores, memory and GPU of this machine, in words."""
    cpu = platform.processor() or "unknown CPU"
    memory = "unknown memory"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.0f} GB"
                break
    except (OSError, ValueError, IndexError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:
        gpu = "GPU unknown"
    return f"{cpu}, {cores} cores, {memory}, {gpu}"


def commit() -> str:
    """Short HEAD, with a note when tracked files that affect the results have changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--",
             "src/cp2_engine/inference", "src/cp2_engine/recipes/_install.py",
             "src/cp2_engine/recipes/_data.py", "src/cp2_engine/models", "src/cp2_engine/metrics",
             "src/cp2_engine/dynamics", "recipes", "splits"],
            cwd=ROOT, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
    except OSError:
        return "unknown"
    return (head or "unknown") + (" (+ uncommitted changes to evaluated code)" if dirty else "")


# ----------------------------------------------------------------------------- evaluation
def evaluate_model(name: str, *, data_root=None, max_per_type=None, recipe_dir=ROOT / "recipes",
                   model=None, compare_precision="bf16") -> dict:  # fmt: skip
    """Evaluate one bundled model with both diameters; return its JSON-ready result."""
    from cp2_engine.inference import Model
    from cp2_engine.recipes import diameter_errors, evaluate, load_bundled_recipe, summarise

    recipe = load_bundled_recipe(Path(recipe_dir) / f"{name}.toml")
    model = model if model is not None else Model.load(name, device="cpu")
    result: dict = {"model": name, "recipe": f"recipes/{name}.toml", "max_per_type": max_per_type}
    by_id: dict[tuple, dict] = {}
    for mode in ("gt", "auto"):
        records = evaluate(
            model,
            recipe,
            data_root=data_root,
            diameter=mode,
            max_per_type=max_per_type,
            size_model_guess=mode == "auto",
            compare_precision=None if mode == "auto" else compare_precision,
        )
        # segmentation time only (the size-model guess and the precision comparison are extra)
        result[f"seconds_{mode}"] = round(sum(r["seconds"] for r in records), 1)
        result[f"summary_{mode}"] = summarise(records)
        print(f"{name} diameter={mode}: {len(records)} images in {result[f'seconds_{mode}']} s, "
              f"AP@0.5 {result[f'summary_{mode}']['all']['ap50']:.3f}", flush=True)  # fmt: skip
        for r in records:
            row = by_id.setdefault((r["source"], r["type"], r["id"]), {
                "source": r["source"], "type": r["type"], "id": r["id"],
                "n_true": r["n_true"], "annotated_diameter": r["annotated_diameter"],
            })  # fmt: skip
            row[f"ap_{mode}"] = r["ap"]
            row[f"n_pred_{mode}"] = r["n_pred"]
            row[f"seconds_{mode}"] = round(r["seconds"], 2)
            if "precision_agreement" in r:
                row["precision_agreement"] = r["precision_agreement"]
            if mode == "auto":
                row["estimated_diameter"] = r["diameter"]
                if "size_model_diameter" in r:
                    row["size_model_diameter"] = r["size_model_diameter"]
    result["images"] = list(by_id.values())
    if compare_precision:
        result["compare_precision"] = compare_precision
        result["summary_agreement"] = summarise(
            [{**r, "ap": r["precision_agreement"]} for r in result["images"]]
        )
    est = [{**r, "diameter": r.get("estimated_diameter")} for r in result["images"]]
    result["diameter_error"] = diameter_errors(est)
    result["size_model_diameter_error"] = diameter_errors(est, key="size_model_diameter")
    return result


# ----------------------------------------------------------------------------- rendering
def _groups(result: dict) -> list[str]:
    """Per-type groups first (by source), then per source, then ``all``."""
    keys = list(result["summary_gt"])
    types = sorted(k for k in keys if "/" in k)
    sources = sorted(k for k in keys if "/" not in k and k != "all")
    if len(sources) < 2:  # one source: its row would repeat "all"
        sources = []
    return types + [s for s in sources if sum(t.startswith(s + "/") for t in types) > 1] + ["all"]


def _pair(result: dict, group: str, key: str) -> str:
    a, g = result["summary_auto"].get(group), result["summary_gt"][group]
    return f"{a[key]:.3f} / {g[key]:.3f}" if a else f"– / {g[key]:.3f}"


def _gap(result: dict, group: str) -> float | None:
    a = result["summary_auto"].get(group)
    return None if a is None else a["ap50"] - result["summary_gt"][group]["ap50"]


def _median_annotated(result: dict, group: str) -> float:
    import numpy as np

    vals = [r["annotated_diameter"] for r in result["images"]
            if group == "all" or group in (r["source"], f"{r['source']}/{r['type']}")]  # fmt: skip
    return float(np.median(vals))


def model_table(result: dict) -> str:
    """The per-type Markdown table of one model (docs/bundled_models.md)."""
    lines = [
        "| group | images | annotated diameter (median) | diameter error: size model → "
        "estimate | AP@0.5 est. / ann. | gap | AP@0.75 est. / ann. | AP@0.9 est. / ann. |"
        + _agreement_header(result),
        "|---|---|---|---|---|---|---|---|" + ("---|" if "summary_agreement" in result else ""),
    ]
    for g in _groups(result):
        gap = _gap(result, g)
        mark = "" if gap is None or gap >= -GAP_TARGET else " ✗"
        first = result["size_model_diameter_error"].get(g)
        err = result["diameter_error"].get(g)
        errs = (
            (f"{first:.3f} → {err:.3f}" if first is not None else f"{err:.3f}")
            if err is not None
            else "–"
        )
        name = f"**{g}**" if g == "all" else g
        lines.append(
            f"| {name} | {result['summary_gt'][g]['n']} | {_median_annotated(result, g):.1f} px "
            f"| {errs} | {_pair(result, g, 'ap50')} | "
            + ("–" if gap is None else f"{gap:+.3f}{mark}")
            + f" | {_pair(result, g, 'ap75')} | {_pair(result, g, 'ap90')} |"
            + _agreement_cell(result, g)
        )
    return "\n".join(lines)


def _agreement_header(result: dict) -> str:
    if "summary_agreement" not in result:
        return ""
    return f" {result['compare_precision']} vs fp32 masks AP@0.5 / AP@0.9 |"


def _agreement_cell(result: dict, group: str) -> str:
    if "summary_agreement" not in result:
        return ""
    a = result["summary_agreement"][group]
    return f" {a['ap50']:.3f} / {a['ap90']:.3f} |"


def _fill(text: str) -> str:
    import textwrap

    return textwrap.fill(text, width=99, break_on_hyphens=False, break_long_words=False)


def provenance_line(meta: dict) -> str:
    return (f"Measured {meta['date']} on {meta['machine']} (torch threads: {meta['threads']}), "
            f"commit {meta['commit']}, {meta['seconds'] / 60:.0f} min; command: "
            f"`{meta['command']}`"
            + (f"; docs written from its JSON by `{meta['rendered']}`" if meta.get("rendered")
               else "") + "." + (f" {meta['note']}" if meta.get("note") else ""))  # fmt: skip


def _same_run(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("date", "commit", "command"))


def provenance(results: list[dict], meta: dict) -> str:
    """One provenance line, or one per model when the tables come from different runs."""
    metas = [r.get("meta") or meta for r in results]
    if all(_same_run(m, meta) for m in metas):
        return provenance_line(meta)
    return " ".join(f"`{r['model']}`: {provenance_line(m)}" for r, m in zip(results, metas))


def with_other_models(results: list[dict], json_dir: Path) -> list[dict]:
    """``results`` plus the committed JSON of every other model, in ``MODELS`` order.

    The docs hold every model's tables: evaluating one model must not drop the others'.
    """
    done = {r["model"]: r for r in results}
    out = []
    for name in dict.fromkeys([*MODELS, *done]):
        path = json_dir / f"{name}.json"
        if name in done:
            out.append(done[name])
        elif path.is_file():
            out.append(json.loads(path.read_text()))
    return out


def doc_section(results: list[dict], meta: dict) -> str:
    """The generated part of docs/bundled_models.md."""
    out = [
        "Every validation image, evaluated twice: with the diameter a user gets from "
        "`diameter=None` (**est.**: the size model's guess, then segment-and-remeasure iterated "
        "to a fixed point, `src/cp2_engine/inference/_diameter.py`) and with the annotated one "
        "(**ann.**: the image's median mask diameter). *Diameter error* is the median over the "
        "images of |log(estimated / annotated)| (0.1 ≈ 10 % off), first for the size model's "
        "guess alone, then for the final estimate. *Gap* = AP@0.5 est. − AP@0.5 ann.; ✗ marks "
        f"an estimated-diameter AP@0.5 more than {GAP_TARGET} below the annotated one (the "
        "project's target). Per-image records (both "
        "diameters, AP, counts, seconds): "
        + ", ".join(f"`docs/validation/{r['model']}.json`" for r in results)
        + ".",
        "",
        *(
            [
                "The last column scores the masks of the network run in "
                f"{results[0]['compare_precision']} (autocast, at the annotated diameter) "
                "against the exact fp32 masks, taken as the annotation: 1.000 means the same "
                "cells. On a CPU without native bfloat16 it runs emulated (slower; the rounding "
                "of inputs and weights is the same, only summation order may differ).",
                "",
            ]
            if any("summary_agreement" in r for r in results)
            else []
        ),
        provenance(results, meta),
    ]
    out = [_fill(p) if p else p for p in out]
    for r in results:
        capped = f", at most {r['max_per_type']} images per type" if r["max_per_type"] else ""
        n = r["summary_gt"]["all"]["n"]
        timing = (f"Segmentation time for the {n} images: {r['seconds_gt']:.0f} s with the "
                  f"annotated diameter, {r['seconds_auto']:.0f} s with the estimated one "
                  f"({r['seconds_auto'] / max(r['seconds_gt'], 1e-9):.2f}x).")  # fmt: skip
        out += ["", f"#### {r['model']}{capped}", "", model_table(r), "", _fill(timing)]
    return "\n".join(out)


def readme_table(results: list[dict], meta: dict) -> str:
    """The compact README table: one row per validation type, both diameters."""
    lines = [
        "| model | validation images (type) | n | AP@0.5 est. (ann.) | AP@0.75 est. (ann.) "
        "| AP@0.9 est. (ann.) | diameter error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for g in _groups(r):
            if g != "all" and "/" not in g:
                continue
            a, t = r["summary_auto"].get(g), r["summary_gt"][g]
            cells = [f"{a[k]:.3f} ({t[k]:.3f})" if a else f"– ({t[k]:.3f})"
                     for k in ("ap50", "ap75", "ap90")]  # fmt: skip
            err = r["diameter_error"].get(g)
            label = "**all**" if g == "all" else g.replace("/", " ")
            lines.append(f"| `{r['model']}` | {label} | {t['n']} | " + " | ".join(cells)
                         + f" | {'–' if err is None else f'{err:.3f}'} |")  # fmt: skip
    lines += [
        "",
        _fill(
            "AP = TP / (TP + FP + FN) at an IoU threshold, averaged over the held-out validation "
            "images; *est.* is the diameter a user gets with `diameter=None` (estimated), *ann.* "
            "the annotated median diameter; diameter error = median |log(estimated / annotated)|. "
            + provenance(results, meta)
        ),
    ]
    return "\n".join(lines)


def replace_marked(text: str, mark: str, body: str) -> str:
    """Replace what lies between ``<!-- mark:begin ... -->`` and ``<!-- mark:end -->``.

    Examples
    --------
    >>> t = "a\\n<!-- x:begin (generated) -->\\nold\\n<!-- x:end -->\\nb\\n"
    >>> print(replace_marked(t, "x", "new"), end="")
    a
    <!-- x:begin (generated) -->
    new
    <!-- x:end -->
    b
    """
    begin, end = f"<!-- {mark}:begin", f"<!-- {mark}:end -->"
    i = text.find(begin)
    j = text.find(end)
    if i < 0 or j < i or text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"expected exactly one {begin} ... {end} section")
    head_end = text.index("-->", i) + 3
    return text[:head_end] + "\n" + body.rstrip("\n") + "\n" + text[j:]


def write_marked(path: Path, mark: str, body: str) -> None:
    """Rewrite the marked section of ``path`` atomically (the rest of the file is kept)."""
    from cp2_engine.util import atomic_write_file

    new = replace_marked(path.read_text(), mark, body)
    atomic_write_file(path, lambda f: f.write(new.encode()))


def write_json(path: Path, obj: dict) -> None:
    from cp2_engine.util import atomic_write_file

    atomic_write_file(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


# ----------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--data", type=Path, help="datasets root (default: the engine's)")
    parser.add_argument(
        "--max-per-type", type=int, help="at most N images per type (a quick look)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json-dir", type=Path, default=ROOT / "docs" / "validation")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "bundled_models.md")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--no-docs", action="store_true", help="write only the JSON files")
    parser.add_argument("--from-json", action="store_true",
                        help="re-render the docs from the JSON files, no evaluation")  # fmt: skip
    parser.add_argument("--parallel", action="store_true",
                        help="evaluate the models in parallel processes (one each)")  # fmt: skip
    parser.add_argument("--compare-precision", default="bf16", choices=("bf16", "none"),
                        help="also score masks of this network precision against the fp32 "
                             "masks at the annotated diameter ('none' skips)")  # fmt: skip
    parser.add_argument("--note", help="a sentence for the provenance line (e.g. the machine "
                        "was shared), kept in the JSON")  # fmt: skip
    parser.add_argument("--command", help=argparse.SUPPRESS)  # the parent's, for --parallel
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    command = args.command or "python benchmarks/validation_tables.py" + "".join(
        " " + shlex.quote(a) for a in argv)  # fmt: skip

    if args.parallel and not args.from_json:
        t0 = time.perf_counter()
        rest = [a for a in argv if a != "--parallel"]
        drop = {"--models"}
        kept, skip = [], False
        for a in rest:  # the parent's options without --models NAME ...
            if a in drop:
                skip = True
                continue
            if skip and not a.startswith("--"):
                continue
            skip = False
            kept.append(a)
        children = [subprocess.Popen([sys.executable, __file__, *kept, "--models", name,
                                      "--no-docs", "--command", command])
                    for name in args.models]  # fmt: skip
        if any(c.wait() != 0 for c in children):
            print("an evaluation failed; docs not rewritten", file=sys.stderr)
            return 1
        print(f"all models evaluated in {time.perf_counter() - t0:.0f} s")
        args.from_json = True

    results = []
    if args.from_json:
        for name in args.models:
            results.append(json.loads((args.json_dir / f"{name}.json").read_text()))
        meta = dict(results[0]["meta"])
        if "--no-docs" in meta["command"].split():  # the evaluation did not write the docs
            meta["rendered"] = command
        if args.note:
            meta["note"] = args.note
            for res in results:
                res["meta"] = dict(res["meta"], note=args.note)
                write_json(args.json_dir / f"{res['model']}.json", res)
    else:
        import torch

        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        meta = {"date": datetime.date.today().isoformat(), "machine": machine(),
                "commit": commit(), "command": command, "threads": args.threads}  # fmt: skip
        if args.note:
            meta["note"] = args.note
        for name in args.models:
            res = evaluate_model(name, data_root=args.data, max_per_type=args.max_per_type,
                                 compare_precision=None if args.compare_precision == "none"
                                 else args.compare_precision)  # fmt: skip
            res["meta"] = dict(meta, seconds=round(time.perf_counter() - t0))
            write_json(args.json_dir / f"{name}.json", res)
            results.append(res)
        meta["seconds"] = round(time.perf_counter() - t0)
        for res in results:  # every file carries the whole run's time
            res["meta"] = meta
            write_json(args.json_dir / f"{res['model']}.json", res)
    for res in results:
        print(f"\n{res['model']}\n{model_table(res)}")
    if not args.no_docs:
        results = with_other_models(results, args.json_dir)
        write_marked(args.doc, DOC_MARK, doc_section(results, meta))
        write_marked(args.readme, README_MARK, readme_table(results, meta))
        print(f"\nrewrote the marked sections of {args.doc} and {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
