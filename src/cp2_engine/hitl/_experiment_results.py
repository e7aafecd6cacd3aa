"""Outputs of the experiments of :mod:`cp2_engine.hitl`: CSV, JSON (rows, summary, provenance),
a figure, and for ``hitl-vs-offline`` a Markdown table of the ROIs each strategy needs to reach
90 % and 95 % of the best offline AP.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

__all__ = ["EXPERIMENTS", "summarise_hitl", "write_results"]

EXPERIMENTS = ("learning-curve", "hitl-vs-offline")
FRACTIONS = (0.95, 0.90)
_STYLES = {"pretrained_online_random": ("C0", "o-"), "pretrained_online_active": ("C2", "D-"),
           "scratch_online": ("C3", "s-"), "pretrained_offline": ("C0", "o--"),
           "scratch_offline": ("C3", "s--")}  # fmt: skip


def _atomic_text(path: Path, text: str) -> None:
    from cp2_engine.util import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(text)


def summarise_hitl(rows: list[dict], *, metric: str = "ap50") -> dict:
    """Best offline AP, the 95 % / 90 % targets and, per strategy, the fewest human ROIs at which
    its test AP reaches each target (None: not reached, or no target: ``targets`` are None without
    an offline point), its best and its last point; ``ran`` is False for an online strategy that
    has only its start point (step 0).

    Examples
    --------
    >>> rows = [{"strategy": "scratch_offline", "step": 1, "human_rois": 100, "ap50": 0.8},
    ...         {"strategy": "pretrained_online_random", "step": 1, "human_rois": 10,
    ...          "ap50": 0.77}]
    >>> s = summarise_hitl(rows)
    >>> s["best_offline"], s["strategies"]["pretrained_online_random"]["rois_to_95"]
    (0.8, 10)
    """
    offline = [r[metric] for r in rows if r["strategy"].endswith("_offline")]
    best = max(offline) if offline else None
    out = {"metric": metric, "best_offline": best,
           "targets": {f"{round(f * 100)}": (f * best if best else None)
                       for f in FRACTIONS}, "strategies": {}}  # fmt: skip
    for strategy in _STYLES:
        own = [r for r in rows if r["strategy"] == strategy]
        if not own:
            continue
        pts = sorted((r["human_rois"], r[metric]) for r in own)
        entry = {"ran": any(r["step"] > 0 for r in own)}
        for frac, target in zip(FRACTIONS, out["targets"].values()):
            hits = [rois for rois, ap in pts if target is not None and ap >= target]
            entry[f"rois_to_{round(frac * 100)}"] = hits[0] if hits else None
        top = max(pts, key=lambda p: (p[1], -p[0]))
        entry.update(best=top[1], rois_at_best=top[0], final=pts[-1][1], max_rois=pts[-1][0])
        out["strategies"][strategy] = entry
    return out


def _fmt(value) -> str:
    return "not reached" if value is None else str(value)


def hitl_table(rows: list[dict]) -> str:
    """Markdown table: per strategy, ROIs to 95 % / 90 % of the best offline AP@0.5 (and
    AP@0.75), the best AP@0.5 and the end point. An online strategy with only its start point
    (step 0) says "no round run yet"; without an offline point there is no target yet, and the
    table says so instead of "not reached".

    Examples
    --------
    >>> print(hitl_table([{"strategy": "scratch_offline", "human_rois": 5, "step": 1,
    ...                    "ap50": 0.5, "ap75": 0.2}]).splitlines()[2])
    | scratch_offline | 5 | 5 | 5 | 5 | 0.500 (5) | 1 | 5 | 0.500 | 0.200 |
    """
    s50, s75 = summarise_hitl(rows), summarise_hitl(rows, metric="ap75")
    lines = ["| strategy | ROIs to 95% AP@0.5 | to 90% | to 95% AP@0.75 | to 90% | "
             "best AP@0.5 (ROIs) | end: step | human ROIs | AP@0.5 | AP@0.75 |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for strategy, e in s50["strategies"].items():
        e75 = s75["strategies"][strategy]
        last = max((r for r in rows if r["strategy"] == strategy),
                   key=lambda r: (r["human_rois"], r["step"]))  # fmt: skip
        counts = (e["rois_to_95"], e["rois_to_90"], e75["rois_to_95"], e75["rois_to_90"])
        hits = [_fmt(x) for x in counts] if e["ran"] else ["no round run yet", "-", "-", "-"]
        if e["ran"] and s50["best_offline"] is None:  # no target to reach yet
            hits = ["no offline point yet", "-", "-", "-"]
        lines.append(f"| {strategy} | {' | '.join(hits)} | {e['best']:.3f} ({e['rois_at_best']})"
                     f" | {last['step']} | {last['human_rois']} | {last['ap50']:.3f} | "
                     f"{last['ap75']:.3f} |")  # fmt: skip
    best = s50["best_offline"]
    if best is not None:
        lines += [
            "",
            f"Best offline AP@0.5 {best:.3f} (95%: {0.95 * best:.3f}, 90%: "
            f"{0.9 * best:.3f}); best offline AP@0.75 {s75['best_offline']:.3f}.",
        ]
    return "\n".join(lines) + "\n"


def write_results(
    rows: list[dict],
    out_dir: str | os.PathLike,
    *,
    name: str,
    stem: str | None = None,
    meta: dict | None = None,
) -> list[Path]:
    """Write ``rows`` as ``<stem>.csv``, ``<stem>.json`` (``{"meta", "summary", "rows"}``) and a
    ``<stem>.png`` figure, plus ``<stem>.md`` (the summary table) for ``hitl-vs-offline``.

    Examples
    --------
    >>> import tempfile
    >>> rows = [{"strategy": "scratch_online", "step": 0, "human_rois": 0, "ap50": 0.0,
    ...          "ap75": 0.0}]
    >>> [p.suffix for p in write_results(rows, tempfile.mkdtemp(), name="hitl-vs-offline")]
    ['.csv', '.json', '.png', '.md']
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"name must be one of {EXPERIMENTS}, got {name!r}")
    if not rows:
        raise ValueError("no result rows to write")
    out, stem = Path(out_dir), stem or name
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    paths = [out / f"{stem}.csv", out / f"{stem}.json", out / f"{stem}.png"]
    summary = None
    if name == "hitl-vs-offline":
        summary = {"ap50": summarise_hitl(rows), "ap75": summarise_hitl(rows, metric="ap75")}
    record = {"experiment": name, "meta": meta or {}, "summary": summary, "rows": rows}
    _atomic_text(paths[0], buf.getvalue())
    _atomic_text(paths[1], json.dumps(record, indent=1) + "\n")
    from cp2_engine.util import atomic_write

    with atomic_write(paths[2]) as tmp:
        _plot(rows, name, (meta or {}).get("title", stem)).savefig(tmp, dpi=110)
    if name == "hitl-vs-offline":
        paths.append(out / f"{stem}.md")
        _atomic_text(paths[3], hitl_table(rows))
    return paths


def _plot(rows: list[dict], name: str, title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), tight_layout=True)
    for k, (metric, label) in enumerate((("ap50", "AP@0.5"), ("ap75", "AP@0.75"))):
        ax = fig.add_subplot(1, 2, k + 1)
        if name == "learning-curve":
            _plot_curve(ax, rows, metric)
            ax.set(xscale="log", xlabel="training ROIs")
        else:
            _plot_hitl(ax, rows, metric)
            ax.set(xscale="log", xlabel="human ROIs, drawn + fixed (0 plotted at 1)")
        ax.set(ylabel=f"test {label}", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def _plot_curve(ax, rows, metric) -> None:
    import numpy as np

    for init, colour in (("pretrained", "C0"), ("scratch", "C3")):
        sel = [r for r in rows if r["init"] == init]
        if not sel:
            continue
        ax.plot([r["n_rois"] for r in sel], [r[metric] for r in sel], "o", color=colour,
                alpha=0.4, ms=4)  # fmt: skip
        sizes = sorted({r["size"] for r in sel})
        x = [np.mean([r["n_rois"] for r in sel if r["size"] == s]) for s in sizes]
        y = [np.mean([r[metric] for r in sel if r["size"] == s]) for s in sizes]
        ax.plot(x, y, "-", color=colour, label=f"{init} (mean per size)")


def _plot_hitl(ax, rows, metric) -> None:
    summary = summarise_hitl(rows, metric=metric)
    for strategy, (colour, style) in _STYLES.items():
        if not summary["strategies"].get(strategy, {}).get("ran"):  # none, or the start alone
            continue
        sel = sorted((r for r in rows if r["strategy"] == strategy),
                     key=lambda r: (r["human_rois"], r["step"]))  # fmt: skip
        x = [max(1, r["human_rois"]) for r in sel]
        ax.plot(x, [r[metric] for r in sel], style, color=colour, label=strategy, ms=4)
    for (key, target), ls in zip(summary["targets"].items(), (":", "-.")):
        if target is not None:
            ax.axhline(target, color="grey", lw=0.8, ls=ls, label=f"{key}% of best offline")
