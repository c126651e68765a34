"""`autotune show PROFILE`: what a profile says, readable."""
from __future__ import annotations

import argparse
from typing import Any

from autotune.cli.format import print_json, seconds, settings_diff, size, table


def add_parser(sub: Any) -> None:
    p = sub.add_parser("show", help="print a profile: target, winner, measurements, alternatives",
                       description="Print a profile written by `autotune search`.")
    p.add_argument("profile", help="path to a profile YAML")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autotune.knobs import all_knobs
    from autotune.profiles.profile import Profile

    profile = Profile.load(args.profile)
    if args.json:
        print_json(profile.to_dict())
        return 0
    t, fp, best = profile.target, profile.fingerprint, profile.best
    defaults = {k.name: k.default for k in all_knobs()}
    print(f"profile  {args.profile} (schema {profile.schema_version}, created {profile.created})")
    frames = f", {t.frames} frames" if getattr(t, "frames", None) else ""
    print(f"target   {t.model} ({t.pipeline_class}) {t.width}x{t.height}{frames} batch {t.batch}, {t.steps} steps, "
          f"ceiling {size(t.max_vram)} on {t.device}")
    if getattr(t, "call_args", None):
        print("call     " + " ".join(f"{k}={v}" for k, v in t.call_args.items()))
    versions = fp.versions
    print(f"measured on {fp.device_name} ({fp.device}), torch {versions.get('torch')}, "
          f"diffusers {versions.get('diffusers')}, autotune {versions.get('autotune')}")
    if fp.emulated:
        print(f"ceiling  emulated on a {size(fp.total_memory_bytes)} card (PyTorch capped to "
              f"{fp.memory_fraction or 0:.4f} of it); confirm on a real {size(t.max_vram)} card")
    if fp.pytorch_cuda_alloc_conf:
        print(f"PYTORCH_CUDA_ALLOC_CONF={fp.pytorch_cuda_alloc_conf}")
    print("\nsettings")
    for name, value in best.settings.items():
        print(f"  {name:<14} {value}{'' if defaults.get(name) == value else '   (changed)'}")
    print(f"\nlatency  {seconds(best.latency_median_s)} median, {seconds(best.latency_p90_s)} p90 over {best.runs} runs")
    print(f"peak     {size(best.peak_bytes)} ({best.peak_metric})")
    search = profile.search
    if search:
        print(f"search   {search.trials_measured} trials measured, {search.feasible} feasible, "
              f"{search.sampler} seed {search.seed}, {search.duration_s} s")
    if profile.alternatives:
        print("\nalternatives (feasible, Pareto-optimal: each uses less memory than every faster one)")
        rows = [(seconds(a.latency_median_s), size(a.peak_bytes), settings_diff(a.settings, defaults))
                for a in profile.alternatives]
        print(table(["latency", "peak", "settings (vs defaults)"], rows))
    return 0
