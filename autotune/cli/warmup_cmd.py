"""`autotune warmup PROFILE`: build a compiled profile's artifacts on the machine that will run it."""
from __future__ import annotations

import argparse
from typing import Any

from autotune.cli.format import print_json, seconds


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "warmup", help="build a compiled profile's compile artifacts here, so production skips the cold compile",
        description="Apply a profile whose settings compile the denoiser in a fresh process, time the "
                    "cold first call, save torch.compile's caches beside the profile (PROFILE.compile.bin, "
                    "hash and key in the profile), then time the first call of a second fresh process "
                    "that loads them. apply_profile() loads them when torch, the device, dtype and shapes "
                    "match. Run it where the profile will run (e.g. when building a fleet image).",
    )
    p.add_argument("profile", help="path to a profile YAML whose settings use compile")
    p.add_argument("--device", help="override the profile's device (cuda, cpu)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per process (default: 1800)")
    p.add_argument("--json", action="store_true", help="print the artifacts record as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autotune.profiles.apply import require_device
    from autotune.profiles.profile import Profile
    from autotune.profiles.warmup import warmup

    require_device(args.device or Profile.load(args.profile).target.device)
    profile = warmup(args.profile, device=args.device, timeout_s=args.timeout)
    record = profile.compile_artifacts.to_dict() if profile.compile_artifacts else {}
    if args.json:
        print_json(record)
        return 0
    first = record.get("first_call_s", {})
    print(f"compile artifacts: {record.get('file')} ({record.get('bytes', 0) / 2**20:.1f} MiB)")
    print(f"first call: {seconds(first.get('cold'))} cold, {seconds(first.get('with_artifacts'))} with the artifacts")
    return 0
