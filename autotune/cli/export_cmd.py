"""`autotune export --storage URL --study NAME --out PROFILE`: the profile of a stored study.

For a study that several processes, GPUs or machines measured together (`search --study NAME`),
or any search whose profile was not written: the result is rebuilt from the storage, nothing is
measured and the storage is not written to.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="write the profile of a stored (e.g. shared) study, without measuring",
        description="Rebuild a search's result from its storage and write its profile: the fastest "
                    "feasible trial (the confirmed winner, when confirmed) and its alternatives.",
        epilog="example:\n  autotune export --storage postgresql://autotune@db-host/autotune "
               "--study sd15-1024 --out profiles/sd15-1024.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--storage", required=True,
                   help="the study's storage: a database URL or a journal file (.autotune/studies.journal)")
    p.add_argument("--study", required=True, help="the study's name (`autotune search --study NAME`)")
    p.add_argument("--out", type=Path, required=True, help="profile path to write (.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autotune.cli.format import check_output_path
    from autotune.errors import InvalidTargetError

    out = check_output_path(args.out, (".yaml", ".yml"), "--out")
    if out.exists() and not args.force:
        raise InvalidTargetError(f"--out {str(out)!r} exists; pass --force to overwrite it, or pick another path")
    from autotune.search.ledger import read_result
    from autotune.jobs import profile_from

    result = read_result(args.storage, args.study)
    profile = profile_from(result)  # NoFeasibleTrialError when no trial fits: nothing is written
    best = result.best
    if best is not None:  # the machine that measured, not the one exporting
        profile.fingerprint = dataclasses.replace(profile.fingerprint, device_name=best.measurement.device_name)
    profile.save(out)
    print(f"profile of study {args.study!r} ({len(result.records)} trials measured) written to {out}")
    return 0
