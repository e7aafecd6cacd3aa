"""``cp2 hitl``: look at a human-in-the-loop project and choose the image to annotate next.

``cp2 hitl status <project>`` prints the project's counts; ``cp2 hitl next <project>
[--strategy order|active]`` prints the next image (with ``active``: the ranking of every
unaccepted image by the current model's uncertainty and the reason for each). Both only read.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

NAME = "hitl"
HELP = "show a human-in-the-loop project, or choose its next image (in order or by uncertainty)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 hitl`` arguments to ``parser``."""
    parser.add_argument("action", choices=("next", "status"), help="what to do")
    parser.add_argument("project", type=Path, help="the project folder")
    parser.add_argument(
        "--strategy",
        choices=("order", "active"),
        default="order",
        help="next: 'order' = first unaccepted image; 'active' = the one the current model is "
        "least sure of (flow error, cell probability near the threshold, flip disagreement, "
        "style distance to accepted images)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _status(project, as_json: bool) -> int:
    status = asdict(project.status())
    if as_json:
        print(json.dumps(status, indent=1))
    else:
        for key, value in status.items():
            print(f"{key}: {value}")
    return 0


def _next(project, strategy: str, as_json: bool) -> int:
    ranking = project.rank_next() if strategy == "active" else []
    name = ranking[0].name if ranking else project.next_image("order")
    if as_json:
        record = {"next": name, "strategy": strategy,
                  "ranking": [r.to_dict() for r in ranking]}  # fmt: skip
        print(json.dumps(record, indent=1))
        return 0
    if name is None:
        print("every image is accepted")
        return 0
    print(f"next: {name}")
    for i, r in enumerate(ranking, start=1):
        print(f"{i:3d}. {r.name}  score {r.score:.3f}  ({r.reason})")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``cp2 hitl`` and return the exit status."""
    from cp2_engine.hitl import HitlProject

    project = HitlProject.open(args.project, device=args.device)
    if args.action == "status":
        return _status(project, args.json)
    return _next(project, args.strategy, args.json)
