"""`autotune report PROFILE_OR_RUN_DIR`: plots of what a search measured, PNG and one HTML page."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="plot a search: latency vs memory, Pareto front, predictions, knobs (PNG + HTML)",
        description="Plot the study behind a profile (its search.storage and search.study_name) or the "
                    "latest study in a run directory: every trial's latency against peak memory with its "
                    "outcome, the Pareto front and the ceiling, the planner's predictions, each knob's "
                    "effect and, when measured, image quality. Writes PNGs, trials.csv and a "
                    "self-contained report.html. Needs the report extra: pip install "
                    "'diffusers-autotune[report]'.")
    p.add_argument("source", metavar="PROFILE_OR_RUN_DIR",
                   help="a profile YAML, a run directory (holding studies.journal), a journal file or a "
                        "storage URL")
    p.add_argument("--out", type=Path, help="output folder (default: NAME-report/ beside a profile, "
                                            "report/ in a run directory)")
    p.add_argument("--study", help="study name in the storage (default: the profile's, else the latest)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autotune.report import build_report
    from autotune.report.trials import CATEGORIES, LABELS

    report = build_report(args.source, args.out, study_name=args.study)
    data = report.data
    counts = ", ".join(f"{len(data.by(c))} {LABELS[c]}" for c in CATEGORIES if data.by(c))
    print(f"study    {report.source.study_name} ({report.source.storage})")
    print(f"trials   {counts}")
    for reason in report.skipped:
        print(f"skipped  {reason}")
    for path in report.files.values():
        print(f"wrote    {path}")
    return 0
