"""`autotune plan`: predicted peak memory of every candidate, without running anything."""
from __future__ import annotations

import argparse
import textwrap
import sys
import time
from typing import Any

from autotune.cli.format import print_json, settings_diff, size, table
from autotune.cli.target_args import add_target_arguments, target_from_args


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plan", help="predict each candidate's peak memory under a ceiling, on any machine",
        description=textwrap.fill("Predict the peak device memory of every candidate setting from fake-tensor traces "
                    "of the real diffusers code (no GPU, no weights, no run), with where the peak "
                    "happens and whether it fits under --max-vram. Candidates are listed feasible "
                    "first, likely-fastest first.", width=88),
        epilog="example:\n  autotune plan --model builtin:sd15 --height 512 --width 512 --batch 4 --max-vram 8GB",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(p, model_default_help="builtin:sd15")
    p.add_argument("--device", default="cuda", help="device to plan for: cuda (default, works without a GPU) or cpu")
    p.add_argument("--top", type=int, default=14, help="rows to print (default: 14; --json lists all)")
    p.add_argument("--every", action="store_true",
                   help="one row per candidate (default: one per offload mode and dtype, its likely-fastest)")
    p.add_argument("--json", action="store_true", help="print every candidate's prediction as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autotune.errors import InvalidTargetError
    from autotune.planner import Planner
    from autotune.planner.seeding import speed_prior
    from autotune.tune import space_for

    if args.top < 1:
        raise InvalidTargetError(f"--top must be 1 or more, got {args.top}")
    target = target_from_args(args, args.device, "builtin:sd15")
    max_vram = target.max_vram
    space = space_for(target, args.include, args.exclude)
    start = time.monotonic()
    planner = Planner(target)
    rows = [(a, planner.predict(a)) for a in space]
    elapsed = time.monotonic() - start
    prior = speed_prior(target.device)
    rows.sort(key=lambda r: (r[1].total_bytes > max_vram, prior(r[0])))
    feasible = sum(p.total_bytes <= max_vram for _, p in rows)
    if args.json:
        print_json({"target": target.to_dict(), "candidates": len(rows), "feasible": feasible,
                    "seconds": round(elapsed, 2),
                    "plans": [{"settings": a, "fits": p.total_bytes <= max_vram, **p.to_dict()} for a, p in rows]})
        return 0
    defaults = space.default()
    shown = rows if args.every else _one_per_placement(rows)
    print(f"plan for {target.model} {target.width}x{target.height} batch {target.batch} on {target.device}, "
          f"ceiling {size(max_vram)}: {feasible} of {len(rows)} candidates predicted to fit "
          f"({elapsed:.1f} s)", file=sys.stderr)
    unit = "NVML process peak" if target.device == "cuda" else "peak of live tensors in RAM"
    print(f"predicted = weights + activations + workspace + allocator cache + CUDA context ({unit})\n")
    table_rows = [(size(p.total_bytes), "yes" if p.total_bytes <= max_vram else "no", size(p.resident_weights_bytes),
                   size(p.activation_bytes), p.peak_phase, size(p.workspace_bytes + p.allocator_bytes),
                   size(p.runtime_bytes), settings_diff(a, defaults)) for a, p in shown[:args.top]]
    print(table(["predicted", "fits", "weights", "activations", "peak during", "workspace+cache",
                 "context", "settings (vs defaults)"], table_rows))
    if len(shown) > args.top:
        print(f"... {len(shown) - args.top} more rows (--top N)")
    if not args.every:
        print(f"one row per offload mode and dtype, the likely-fastest of each; --every lists all {len(rows)}")
    return 0


def _one_per_placement(rows: list[tuple[dict[str, Any], Any]]) -> list[tuple[dict[str, Any], Any]]:
    """Keep the first row (rows are already in display order) of each (offload, dtype) pair."""
    seen, kept = set(), []
    for assignment, prediction in rows:
        key = (assignment["offload"], assignment["dtype"])
        if key not in seen:
            seen.add(key)
            kept.append((assignment, prediction))
    return kept
