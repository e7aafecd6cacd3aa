"""Outputs of the experiments of :mod:`cp2_engine.hitl`: result rows as CSV, JSON and a plot."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

__all__ = ["EXPERIMENTS", "write_results"]

EXPERIMENTS = ("learning-curve", "hitl-vs-offline")


def _atomic_text(path: Path, text: str) -> None:
    from cp2_engine.util import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_results(rows: list[dict], out_dir: str | os.PathLike, *, name: str) -> list[Path]:
    """Write ``rows`` as ``<name>.csv``, ``<name>.json`` and a ``<name>.png`` plot.

    Examples
    --------
    >>> import tempfile
    >>> rows = [{"mode": "online", "init": "scratch", "round": 0, "drawn_total": 0,
    ...          "ap50": 0.0}]
    >>> [p.suffix for p in write_results(rows, tempfile.mkdtemp(), name="hitl-vs-offline")]
    ['.csv', '.json', '.png']
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"name must be one of {EXPERIMENTS}, got {name!r}")
    if not rows:
        raise ValueError("no result rows to write")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    paths = [out / f"{name}.csv", out / f"{name}.json", out / f"{name}.png"]
    _atomic_text(paths[0], buf.getvalue())
    _atomic_text(paths[1], json.dumps(rows, indent=1) + "\n")
    from cp2_engine.util import atomic_write

    with atomic_write(paths[2]) as tmp:
        _plot(rows, name).savefig(tmp, dpi=100)
    return paths


def _plot(rows: list[dict], name: str):
    from matplotlib.figure import Figure

    if name == "learning-curve":
        fig = Figure(figsize=(5, 4), tight_layout=True)
        ax = fig.add_subplot()
        for init in ("pretrained", "scratch"):
            pts = sorted((r["n_rois"], r["ap50"]) for r in rows if r["init"] == init)
            if pts:
                ax.plot(*zip(*pts), "o-", label=init)
        ax.set(xscale="symlog", xlabel="training ROIs", ylabel="test AP@0.5", ylim=(0, 1))
        ax.legend()
        return fig
    fig = Figure(figsize=(9, 4), tight_layout=True)
    ax_drawn, ax_ap = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for mode in ("online", "offline"):
        for init in ("pretrained", "scratch"):
            sel = sorted((r for r in rows if r["mode"] == mode and r["init"] == init),
                         key=lambda r: r["round"])  # fmt: skip
            if not sel:
                continue
            label, style = f"{mode}, {init}", "-" if mode == "online" else "--"
            rounds = [r["round"] for r in sel]
            ax_drawn.plot(rounds, [r["drawn_total"] for r in sel], style, marker="o", label=label)
            ax_ap.plot(rounds, [r["ap50"] for r in sel], style, marker="o", label=label)
    ax_drawn.set(xlabel="images annotated", ylabel="ROIs drawn by the human (cumulative)")
    ax_ap.set(xlabel="images annotated", ylabel="test AP@0.5", ylim=(0, 1))
    ax_ap.legend(fontsize="small")
    return fig
