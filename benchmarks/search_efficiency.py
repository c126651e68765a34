#!/usr/bin/env python3
"""Does the planner save measurements? The same search with and without it, on builtin:tiny-sd
on CPU, over 3 seeds: trials measured, measured-but-infeasible trials, wall time, best latency,
and the trial at which each run first measured its final best.

    python benchmarks/search_efficiency.py            # ~5 minutes on 2 cores

The default ceiling (8MB) sits between the fp32 peak (11.2 MiB at 128 px) and the half-precision
peaks (<= 5.6 MiB), so a third of the space cannot fit: the case the planner is for. CPU latencies
of this tiny pipeline differ by a few percent between near-identical settings: read "same best"
from the best-settings column, next to each run's best latency.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autotune import hardware  # noqa: E402
from autotune.cli.format import settings_diff  # noqa: E402
from autotune.knobs import all_knobs  # noqa: E402
from autotune.profiles.profile import atomic_write_text  # noqa: E402
from autotune.target import Target  # noqa: E402
from autotune.jobs import tune  # noqa: E402
from autotune.units import parse_size  # noqa: E402

DEFAULTS = {k.name: k.default for k in all_knobs()}


def _diff(a: dict[str, Any]) -> str:
    return settings_diff(a, DEFAULTS)


def one_run(target: Target, trials: int, seed: int, planner: bool, run_dir: Path) -> dict[str, Any]:
    start = time.monotonic()
    result = tune(target, trials=trials, run_dir=run_dir, seed=seed, runs=2, use_planner=planner)
    wall = time.monotonic() - start
    s = result.search
    best = s.best
    first_best = None
    if best is not None:
        order = [r.number for r in s.records]
        first_best = order.index(best.number) + 1
    return {"planner": planner, "seed": seed, "measured": len(s.records),
            "infeasible_measured": s.count("over_ceiling") + s.count("oom"), "pruned": len(s.pruned),
            "wall_s": round(wall, 1), "best_latency_s": best.measurement.latency_median_s if best else None,
            "best_settings": best.assignment if best else None, "best_found_at_trial": first_best}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-vram", default="8MB")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    target = Target(model="builtin:tiny-sd", height=128, width=128, batch=1, steps=8,
                    max_vram=parse_size(args.max_vram), device="cpu")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for planner in (False, True):
                run = one_run(target, args.trials, seed, planner, Path(tmp) / f"{seed}-{planner}")
                print(json.dumps(run), flush=True)
                runs.append(run)
    date = dt.date.today().isoformat()
    path = args.out_dir / f"{date}-search-efficiency-cpu.md"
    lines = [f"# Search efficiency with and without the planner ({hardware.cpu_name()}, CPU)", "",
             f"- date {date}; builtin:tiny-sd 128x128 batch 1, 8 steps, ceiling {args.max_vram}; "
             f"{args.trials} measured trials per search, 2 timed runs each; seeds {args.seeds}",
             f"- command: `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`",
             "- memory metric: peak of live tensors in RAM (CPU), not VRAM", "",
             "| planner | seed | measured | measured over the ceiling | pruned unmeasured | wall | best latency | "
             "best found at trial | best settings |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lat = "-" if r["best_latency_s"] is None else f"{r['best_latency_s']:.3f} s"
        lines.append(f"| {'on' if r['planner'] else 'off'} | {r['seed']} | {r['measured']} | {r['infeasible_measured']} | "
                     f"{r['pruned']} | {r['wall_s']:.0f} s | {lat} | {r['best_found_at_trial']} | "
                     f"{_diff(r['best_settings']) if r['best_settings'] else '-'} |")
    for planner in (False, True):
        mine = [r for r in runs if r["planner"] == planner]
        lines.append(f"\n**planner {'on' if planner else 'off'}**: mean measured-over-ceiling "
                     f"{statistics.mean(r['infeasible_measured'] for r in mine):.1f}, mean trial of the best "
                     f"{statistics.mean(r['best_found_at_trial'] or args.trials for r in mine):.1f}, mean wall "
                     f"{statistics.mean(r['wall_s'] for r in mine):.0f} s")
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_text(path.with_suffix(".json"), json.dumps(runs, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
