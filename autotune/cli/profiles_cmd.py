"""`autotune profiles [DIR]`: the profiles in a folder, one line each."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from autotune.cli.format import print_json, seconds, size, table


def add_parser(sub: Any) -> None:
    p = sub.add_parser("profiles", help="list the profiles in a folder (default: where apply_profile looks)",
                       description="List the profiles in DIR: model, size, batch, ceiling, device, "
                                   "latency and peak of each. DIR defaults to the folder "
                                   "apply_profile(pipe) searches: $AUTOTUNE_PROFILE_DIR, else ./profiles.")
    p.add_argument("dir", nargs="?", type=Path, metavar="DIR",
                   help="folder of profile YAMLs (default: $AUTOTUNE_PROFILE_DIR, else ./profiles)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=run)


def read_folder(folder: Path) -> tuple[list[tuple[Path, Any]], list[str]]:
    """(path, Profile) for each readable *.yaml/*.yml in `folder`, and one reason per unreadable one."""
    from autotune.errors import InvalidTargetError, ProfileError
    from autotune.profiles.profile import Profile

    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise InvalidTargetError(f"profile folder {str(folder)!r} {what}; pass a folder of profile "
                                 "YAMLs (`autotune profiles DIR`) or set $AUTOTUNE_PROFILE_DIR")
    found, skipped = [], []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            found.append((path, Profile.load(path)))
        except ProfileError as exc:
            skipped.append(str(exc))
    return found, skipped


def run(args: argparse.Namespace) -> int:
    from autotune.profiles.discovery import profile_dir_default

    folder = args.dir or profile_dir_default()
    if args.dir is None and not folder.exists():  # nothing searched yet here: not an error
        found, skipped = [], []
    else:
        found, skipped = read_folder(folder)
    found.sort(key=lambda item: (item[1].target.model, item[1].target.width, item[1].target.height,
                                 item[1].target.batch, item[1].target.device, item[1].target.max_vram))
    for reason in skipped:
        print(f"autotune: skipped {reason}", file=sys.stderr)
    if args.json:
        print_json({"dir": str(folder), "skipped": skipped,
                    "profiles": [_row_json(path, prof) for path, prof in found]})
        return 0
    if not found:
        print(f"no profiles in {folder}; write one with `autotune search --max-vram 8GB --out "
              f"{folder}/NAME.yaml`")
        return 0
    rows = [(_model(p.target.model), f"{p.target.width}x{p.target.height}", p.target.batch,
             size(p.target.max_vram), _device(p), seconds(p.best.latency_median_s), size(p.best.peak_bytes),
             path.name) for path, p in found]
    print(f"{len(found)} profile(s) in {folder}\n")
    print(table(["model", "size", "batch", "ceiling", "device", "latency", "peak", "file"], rows))
    return 0


def _model(model: str) -> str:
    return model if len(model) <= 32 else "..." + model[-29:]


def _device(profile: Any) -> str:
    """'cpu', or 'cuda (NVIDIA H200)': which card measured a GPU profile matters to its numbers."""
    name = profile.fingerprint.device_name
    if profile.target.device != "cuda" or not name:
        return profile.target.device
    return f"cuda ({name[:24]})"


def _row_json(path: Path, profile: Any) -> dict[str, Any]:
    t, best = profile.target, profile.best
    return {"file": str(path), "model": t.model, "width": t.width, "height": t.height, "batch": t.batch,
            "steps": t.steps, "max_vram_bytes": t.max_vram, "device": t.device,
            "device_name": profile.fingerprint.device_name,
            "latency_median_s": best.latency_median_s, "peak_bytes": best.peak_bytes,
            "peak_metric": best.peak_metric, "created": profile.created}
