"""Regenerate the demo figures shown in ``docs/demo.md`` (``docs/images/demo_*.png``).

The script runs the demo exactly as ``make demo`` does (``cp2 demo``: the bundled models on
``sample_data/``, then the simulated human in the loop, seed 0) into ``--demo-out`` and copies
three of the report's figures into ``--out-dir`` under the names the docs use:

- ``report/figures/overlays.png`` -> ``demo_overlays.png``
- ``report/figures/hitl_ap.png``  -> ``demo_hitl_ap.png``
- ``report/figures/hitl_rois.png`` -> ``demo_hitl_rois.png``

It then prints the report's Markdown (the tables that ``docs/demo.md`` quotes), so the figures
and the tables come from one run. With ``--from-output DIR`` it copies the figures of an
earlier demo output instead of running the demo again. Usage::

    nice -n 10 .venv/bin/python scripts/demo_figures.py [--out-dir docs/images] \
        [--demo-out demo_output] [--seed 0] [--from-output demo_output]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {"overlays.png": "demo_overlays.png", "hitl_ap.png": "demo_hitl_ap.png",
           "hitl_rois.png": "demo_hitl_rois.png"}  # fmt: skip
log = logging.getLogger("demo_figures")


def copy_figures(demo_out: Path, out_dir: Path) -> list[Path]:
    """Copy the docs' figures from a demo output's ``report/figures`` into ``out_dir``.

    Each copy is written atomically; a missing figure raises FileNotFoundError naming it.
    """
    from cp2_engine.util import atomic_write_file

    figures = Path(demo_out) / "report" / "figures"
    missing = [name for name in FIGURES if not (figures / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{figures} lacks {', '.join(missing)}: expected the output folder of a full "
            "`cp2 demo` run"
        )
    written = []
    for name, target in FIGURES.items():
        data = (figures / name).read_bytes()
        written.append(atomic_write_file(Path(out_dir) / target, lambda f, d=data: f.write(d)))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--out-dir", type=Path, default=ROOT / "docs" / "images", help="where the copies go")
    add("--demo-out", type=Path, default=ROOT / "demo_output", help="the demo's output folder")
    add("--seed", type=int, default=0, help="the demo's seed (make demo: 0)")
    add("--from-output", type=Path, help="copy the figures of this earlier demo output instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    demo_out = args.from_output
    if demo_out is None:
        from cp2_engine.demo import run_demo, summary_lines

        result = run_demo(args.demo_out, seed=args.seed)
        print("\n".join(summary_lines(result)))
        print(f"demo finished in {result.seconds:.0f} s")
        demo_out = result.out_dir
    written = copy_figures(demo_out, args.out_dir)
    print((Path(demo_out) / "report" / "report.md").read_text(encoding="utf-8"))
    print("wrote " + " ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
