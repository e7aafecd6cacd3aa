"""The demo's report: PNG figures, ``report.md`` and ``report.html`` from one list of blocks.

The report is built once as a list of blocks (headings, paragraphs, tables, images, code) and
rendered twice, to Markdown and to HTML, so the two never disagree. Images are referenced by
relative paths (``figures/*.png`` and ``../segmentation/*_overlay.png``), so the ``report/``
folder opens in a browser as it is, next to the rest of the demo output.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import numpy as np

from cp2_engine.util import atomic_write

__all__ = ["napari_hint", "summary_lines", "to_html", "to_markdown", "write_report"]

logger = logging.getLogger(__name__)

_COLOURS = {"pretrained": "tab:blue", "scratch": "tab:orange"}


# ----------------------------------------------------------------------------- figures
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _plot_overlays(images, path: Path) -> Path:
    from PIL import Image

    n = len(images)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = _figure(3.6 * cols, 3.8 * rows)
    for k, im in enumerate(images):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(np.asarray(Image.open(im.overlay)))
        ax.set_title(f"{im.name}\n{im.model}: AP@0.5 {im.ap[0]:.2f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("green: ground truth, magenta: prediction", fontsize=9)
    return _save(fig, path)


def _plot_ap(runs, path: Path) -> Path:
    fig = _figure(5.0, 3.6)
    ax = fig.add_subplot()
    for run in runs:
        x = [r.round for r in run.rounds]
        colour = _COLOURS.get(run.init)
        ax.plot(x, [r.ap50 for r in run.rounds], "o-", color=colour, label=f"{run.init} AP@0.5")
        ax.plot(x, [r.ap75 for r in run.rounds], "s--", color=colour, label=f"{run.init} AP@0.75")
    ax.set(xlabel="HITL round (images annotated)", ylabel="test AP", ylim=(0, 1.02))
    ax.set_xticks(x)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", frameon=False)
    return _save(fig, path)


def _plot_rois(runs, path: Path) -> Path:
    fig = _figure(5.0, 3.6)
    ax = fig.add_subplot()
    width = 0.8 / max(len(runs), 1)
    for k, run in enumerate(runs):
        rounds = run.rounds[1:]
        x = np.array([r.round for r in rounds]) + (k - (len(runs) - 1) / 2) * width
        ax.bar(x, [r.n_human for r in rounds], width, color=_COLOURS.get(run.init),
               label=f"{run.init}")  # fmt: skip
    true = [r.n_true for r in runs[0].rounds[1:]]
    ax.plot([r.round for r in runs[0].rounds[1:]], true, "k_", ms=30, mew=2, label="ROIs in image")
    ax.set(xlabel="HITL round", ylabel="ROIs the annotator drew or fixed")
    ax.set_xticks([r.round for r in runs[0].rounds[1:]])
    ax.legend(fontsize="small", frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              ncol=3)  # fmt: skip
    return _save(fig, path)


def _plot_losses(runs, path: Path) -> Path:
    fig = _figure(5.0 * len(runs), 3.4)
    for k, run in enumerate(runs):
        ax = fig.add_subplot(1, len(runs), k + 1)
        for r in run.rounds[1:]:
            ax.plot(np.arange(1, len(r.losses) + 1), r.losses, label=f"round {r.round}")
        ax.set(xlabel="epoch", ylabel="training loss", title=f"{run.init} ({run.start_model})")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", frameon=False)
    return _save(fig, path)


def _plot_examples(runs, test_image, path: Path) -> Path:
    from cp2_engine.viz import overlay_rgb

    panels = [(f"{run.init}, round {r}", masks) for run in runs
              for r, masks in zip((0, run.rounds[-1].round), run.example_masks)]  # fmt: skip
    fig = _figure(3.0 * len(panels), 3.3)
    for k, (title, masks) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.imshow(overlay_rgb(test_image.image, test_image.labels, masks))
        ax.set_title(f"{title}\n{int(masks.max())} ROIs (truth {int(test_image.labels.max())})",
                     fontsize=9)  # fmt: skip
        ax.axis("off")
    return _save(fig, path)


# ----------------------------------------------------------------------------- blocks
def napari_hint(result) -> list[str]:
    """Shell commands and steps that open the demo's outputs in napari.

    Examples
    --------
    >>> napari_hint.__name__
    'napari_hint'
    """
    first = result.images[0].seg_path if result.images else None
    out = result.out_dir
    lines = ["pip install -e '.[napari]'   # once, for the plugin"]
    if first is not None:
        lines.append(f"napari {first}   # image + predicted masks (cp2 reader)")
        lines.append(f"napari {result.images[0].masks_path}   # the masks TIFF alone")
    if result.hitl:
        project = result.hitl[0].project
        lines.append(f"napari {project / 'images'}/*.tif {project / 'corrected'}/*_masks.tif")
    lines.append(
        "then Plugins > cp2 > cp2 (one dock, four tabs): Segment (model cp2_cyto / cp2_nuclei), "
        f"Correct, Train (project folder {out / 'hitl' / 'pretrained'}), Evaluate"
    )
    return lines


def _segmentation_blocks(result) -> list:
    rows = [
        (im.name, im.model, "x".join(map(str, im.shape)), im.n_true, im.n_pred,
         f"{im.diameter:.1f}", f"{im.ap[0]:.3f}", f"{im.ap[1]:.3f}", f"{im.seconds:.1f}")
        for im in result.images
    ]  # fmt: skip
    header = ("image", "model", "shape", "true ROIs", "found", "diameter (size model)",
              "AP@0.5", "AP@0.75", "seconds")  # fmt: skip
    return [
        ("h2", "1. Segmentation of the sample images with the bundled models"),
        (
            "p",
            "Each image was segmented by its bundled model with the diameter estimated by the "
            "model's size model (no diameter given). AP is against the image's "
            "`_masks.tif`. Per image, `segmentation/` holds `<name>_cp_masks.tif`, a "
            "Cellpose-compatible `<name>_seg.npy` and `<name>_overlay.png`.",
        ),
        ("table", header, rows),
        ("img", "figures/overlays.png", "overlays of all sample images"),
    ]


def _hitl_table(result) -> tuple[tuple, list]:
    runs = result.hitl
    metrics = ("drawn + fixed", "AP@0.5", "AP@0.75")
    header = (
        "round",
        "image",
        "ROIs in image",
        *(f"{r.init}: {m}" for r in runs for m in metrics),
    )
    rows = []
    for k, first in enumerate(runs[0].rounds):
        cells = [first.round, first.image or "(start)", first.n_true if k else ""]
        for run in runs:
            r = run.rounds[k]
            human = f"{r.n_drawn} + {r.n_fixed}" if k else ""
            cells += [human, f"{r.ap50:.3f}", f"{r.ap75:.3f}"]
        rows.append(tuple(cells))
    return header, rows


def _hitl_blocks(result) -> list:
    from cp2_engine.hitl import KEEP_IOU

    s = result.settings
    header, rows = _hitl_table(result)
    drawn = {run.init: sum(r.n_human for r in run.rounds) for run in result.hitl}
    total = sum(r.n_true for r in result.hitl[0].rounds)
    return [
        ("h2", "2. Human in the loop on a style the starting model handles badly"),
        (
            "p",
            f"Images: seeded synthetic `{s.style}` cells (grey, one channel, diameter "
            f"{s.diameter:g} px, {s.image_size}x{s.image_size}), generated on the fly. "
            f"The starting model is the bundled `{s.pretrained}`, trained on other images "
            "(the nucleus model on DSB2018 nuclei only). Each round the current model predicts "
            "the next "
            "image, the simulated annotator keeps predicted ROIs that match a true ROI with "
            f"IoU >= {KEEP_IOU:g}, redraws (fixes) those matched with a lower IoU, deletes the "
            "others and draws the missing ones; the correction is "
            "accepted and the starting model is fine-tuned on all accepted images (online "
            f"mode). Test AP is on {s.n_test} held-out image(s) of the same style. The same "
            "images were run from random weights (scratch) for comparison.",
        ),
        (
            "p",
            f"Shortened training to fit the demo's time: {s.n_epochs} epochs per round, "
            f"{s.bsize}-px crops, {s.batch_size} crops per step, learning rate "
            f"{s.learning_rate:g} (the defaults are 100 epochs, 224-px crops, 8 crops per step, "
            "learning rate 0.1 for a pretrained start and 0.2 from scratch).",
        ),
        ("table", header, rows),
        (
            "p",
            "ROIs drawn or fixed by the annotator over all rounds: "
            + ", ".join(f"{k} {v}" for k, v in drawn.items())
            + f" (of {total} ROIs in the annotated images).",
        ),
        ("img", "figures/hitl_ap.png", "test AP per round, pretrained vs scratch"),
        ("img", "figures/hitl_rois.png", "ROIs drawn per round"),
        ("img", "figures/hitl_loss.png", "training loss of every round"),
        ("img", "figures/hitl_examples.png", "a test image at the start and after the last round"),
    ]


def _blocks(result) -> list:
    s = result.settings
    mode = "quick (CI sizes)" if s.max_samples_per_model is not None else "full"
    return [
        ("h1", "cp2 demo report"),
        (
            "p",
            f"Mode: {mode}; seed {s.seed}; device `{s.device}`. Output folder: "
            f"`{result.out_dir}`.",
        ),
        *_segmentation_blocks(result),
        *_hitl_blocks(result),
        ("h2", "3. Open the results in napari"),
        ("code", "\n".join(napari_hint(result))),
    ]


# ----------------------------------------------------------------------------- rendering
def _md_cell(value) -> str:
    return str(value).replace("|", "\\|")


def to_markdown(blocks: list) -> str:
    """Render report blocks as Markdown.

    Examples
    --------
    >>> to_markdown([("h1", "T"), ("table", ("a",), [(1,)])]).splitlines()[2:]
    ['| a |', '| --- |', '| 1 |']
    """
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2"):
            out += [f"{'#' * int(kind[1])} {args[0]}", ""]
        elif kind == "p":
            out += [args[0], ""]
        elif kind == "table":
            header, rows = args
            out.append("| " + " | ".join(map(_md_cell, header)) + " |")
            out.append("|" + " --- |" * len(header))
            out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{args[1]}]({args[0]})", ""]
        elif kind == "code":
            out += ["```bash", args[0], "```", ""]
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape HTML and turn `code` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: list) -> str:
    """Render report blocks as a standalone HTML page (images by relative path).

    Examples
    --------
    >>> "<h1>T</h1>" in to_html([("h1", "T")])
    True
    """
    body = []
    for kind, *args in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{_inline(args[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(args[0])}</p>")
        elif kind == "table":
            header, rows = args
            head = "".join(f"<th>{_inline(str(h))}</th>" for h in header)
            trs = "".join(
                "<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>"
                for row in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
        elif kind == "img":
            src, alt = html.escape(args[0]), html.escape(args[1])
            body.append(f'<figure><img src="{src}" alt="{alt}"><figcaption>{alt}</figcaption>'
                        "</figure>")  # fmt: skip
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(args[0])}</code></pre>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
        "padding:3px 8px;text-align:right}img{max-width:100%}"
        "pre{background:#f4f4f4;padding:.8em;overflow-x:auto}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>cp2 demo report</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def summary_lines(result) -> list[str]:
    """A short plain-text summary of the demo for the terminal.

    Examples
    --------
    >>> summary_lines.__name__
    'summary_lines'
    """
    lines = [f"{'image':<24} {'model':<11} {'true':>5} {'found':>5} {'diam':>6} "
             f"{'AP@0.5':>7} {'AP@0.75':>8}"]  # fmt: skip
    for im in result.images:
        lines.append(f"{im.name:<24} {im.model:<11} {im.n_true:>5} {im.n_pred:>5} "
                     f"{im.diameter:>6.1f} {im.ap[0]:>7.3f} {im.ap[1]:>8.3f}")  # fmt: skip
    s = result.settings
    lines += ["", f"human in the loop ({s.style} cells, {s.n_epochs} epochs/round): "
                  "ROIs drawn+fixed | test AP@0.5 | AP@0.75"]  # fmt: skip
    lines.append(f"{'round':<6}" + "".join(f"{run.init:>26}" for run in result.hitl))
    for k in range(len(result.hitl[0].rounds)):
        cells = []
        for run in result.hitl:
            r = run.rounds[k]
            drawn = f"{r.n_human:>3}" if k else "  -"
            cells.append(f"{drawn} | {r.ap50:.3f} | {r.ap75:.3f}".rjust(26))
        lines.append(f"{k:<6}" + "".join(cells))
    return lines


def write_report(result, *, test_image) -> tuple[Path, Path, tuple[Path, ...]]:
    """Write the figures, ``report.md`` and ``report.html`` into ``<out_dir>/report/``.

    Parameters
    ----------
    result : DemoResult
        The demo's results (report paths may still be placeholders).
    test_image : SyntheticImage
        The first HITL test image (for the before/after figure).

    Returns
    -------
    (Path, Path, tuple of Path)
        ``report.md``, ``report.html`` and the figure paths.
    """
    folder = Path(result.out_dir) / "report"
    figs = folder / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    figures = (
        _plot_overlays(result.images, figs / "overlays.png"),
        _plot_ap(result.hitl, figs / "hitl_ap.png"),
        _plot_rois(result.hitl, figs / "hitl_rois.png"),
        _plot_losses(result.hitl, figs / "hitl_loss.png"),
        _plot_examples(result.hitl, test_image, figs / "hitl_examples.png"),
    )
    blocks = _blocks(result)
    md, page = folder / "report.md", folder / "report.html"
    with atomic_write(md) as tmp:
        tmp.write_text(to_markdown(blocks), encoding="utf-8")
    with atomic_write(page) as tmp:
        tmp.write_text(to_html(blocks), encoding="utf-8")
    logger.info("wrote the demo report %s", md)
    return md, page, figures
