#!/usr/bin/env python3
"""What a search costs and how far its answer can be trusted, on the device it runs on.

Three measurements, each written to one results file named by the device:
1. Per-trial overhead and phases: a default search (`--trials`, seed 0); for every trial its
   wall time split into spawn, weights, build, apply, first run, timed runs, release, and the
   overhead (wall minus warm-up and timed runs).
2. Spread: one assignment (the defaults) measured in `--repeat` separate trials, one after the
   other as a search would; spread = (max - min) / median of the trial medians.
3. Regret: for each of `--seeds` seeds, the default search's winner against the best of a search
   `--long-factor` times longer with the same seed; regret = winner / best - 1 (0 is optimal).

    python benchmarks/search_cost.py --model builtin:tiny-sd            # CPU, ~15 min on 2 cores
    python benchmarks/search_cost.py --model builtin:sd15 --height 128 --width 128 --steps 4 \\
        --trials 6 --no-regret                                         # CPU, SD1.5 architecture
    python benchmarks/search_cost.py --model builtin:sd15 --device cuda --height 512 --width 512

Run it on a quiet machine: another busy process on the same cores is noise the numbers will show.
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
from autotune.measure import SubprocessMeasurer, TrialJob  # noqa: E402
from autotune.profile import atomic_write_text  # noqa: E402
from autotune.target import Target  # noqa: E402
from autotune.tune import tune  # noqa: E402
from autotune.units import parse_size  # noqa: E402

DEFAULTS = {k.name: k.default for k in all_knobs()}
PHASES = ("spawn_s", "import_s", "device_setup_s", "load_weights_s", "build_s", "apply_s", "to_device_s",
          "first_run_s", "timed_s",
          "memory_run_s", "release_s", "overhead_s", "wall_s")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def overhead_and_search(target: Target, trials: int, seed: int, run_dir: Path, **options: Any) -> dict[str, Any]:
    start = time.monotonic()
    result = tune(target, trials=trials, run_dir=run_dir, seed=seed, **options).search
    wall = time.monotonic() - start
    rows = [{"trial": r.number, "settings": settings_diff(r.assignment, DEFAULTS), "outcome": r.outcome,
             "latency_median_s": r.measurement.latency_median_s,
             "ci_rel_half_width": r.measurement.timing.get("ci_rel_half_width"),
             "runs": len(r.measurement.latencies_s),
             **{k: round(r.measurement.timings[k], 3) for k in PHASES if k in r.measurement.timings}}
            for r in result.records]
    best = result.best
    return {"seed": seed, "trials": trials, "wall_s": round(wall, 1), "stopped_by": result.stop_reason,
            "measured": len(result.records), "rows": rows,
            "median_overhead_s": _median([r["overhead_s"] for r in rows if "overhead_s" in r]),
            "best": None if best is None else {
                "trial": best.number, "settings": settings_diff(best.assignment, DEFAULTS),
                "latency_median_s": best.measurement.latency_median_s},
            "confirmation": result.confirmation.to_dict() if result.confirmation else None}


def spread(target: Target, repeat: int, log_dir: Path) -> dict[str, Any]:
    medians, rows = [], []
    with SubprocessMeasurer(timeout_s=900, log_dir=log_dir) as measure:
        for i in range(repeat):
            m = measure(TrialJob(target, dict(DEFAULTS), number=i))
            if m.status != "ok":
                rows.append({"trial": i, "error": m.error})
                continue
            medians.append(m.latency_median_s)
            rows.append({"trial": i, "latency_median_s": m.latency_median_s, "runs": len(m.latencies_s),
                         "ci_rel_half_width": m.timing.get("ci_rel_half_width"),
                         "overhead_s": round(m.timings.get("overhead_s", 0.0), 3)})
    med = _median(medians)
    return {"settings": "defaults", "rows": rows,
            "spread": (max(medians) - min(medians)) / med if med else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:tiny-sd")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max-vram", default="8GB")
    p.add_argument("--trials", type=int, default=20, help="the default search's trials (default: 20)")
    p.add_argument("--long-factor", type=int, default=5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=5, help="separate trials of one assignment (default: 5)")
    p.add_argument("--no-regret", action="store_true", help="skip the regret searches (the slow part)")
    p.add_argument("--exclude", action="append", default=[], help="passed to the searches, e.g. dtype=fp16")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--run-dir", type=Path, help="where studies and trial logs go (default: a temp dir)")
    args = p.parse_args()

    target = Target(model=args.model, height=args.height, width=args.width, batch=1, steps=args.steps,
                    max_vram=parse_size(args.max_vram), device=args.device)
    device_name = hardware.fingerprint(args.device)["device_name"]
    started = time.monotonic()
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="search-cost-"))
    report: dict[str, Any] = {
        "benchmark": "search_cost", "date": dt.date.today().isoformat(), "device": args.device,
        "device_name": device_name, "versions": hardware.versions(), "target": target.to_dict(),
        "command": " ".join(sys.argv),
    }
    print(f"spread: {args.repeat} trials of the defaults on {device_name}", flush=True)
    report["spread"] = spread(target, args.repeat, run_dir / "spread-logs")
    print(f"  spread {report['spread']['spread']}", flush=True)
    searches = []
    for seed in range(1 if args.no_regret else args.seeds):
        print(f"search seed {seed}: {args.trials} trials", flush=True)
        short = overhead_and_search(target, args.trials, seed, run_dir / f"short-{seed}", exclude=args.exclude)
        entry = {"short": short}
        if not args.no_regret:
            print(f"search seed {seed}: {args.trials * args.long_factor} trials", flush=True)
            long = overhead_and_search(target, args.trials * args.long_factor, seed, run_dir / f"long-{seed}",
                                       exclude=args.exclude)
            entry["long"] = {k: v for k, v in long.items() if k != "rows"}
            if short["best"] and long["best"]:
                entry["regret"] = short["best"]["latency_median_s"] / long["best"]["latency_median_s"] - 1
        searches.append(entry)
        print(f"  median overhead {short['median_overhead_s']} s; regret {entry.get('regret')}", flush=True)
    report["searches"] = searches
    report["wall_s"] = round(time.monotonic() - started, 1)
    write(report, args.out_dir)
    return 0


def write(report: dict[str, Any], out_dir: Path) -> None:
    slug = report["device_name"].lower().replace(" ", "-").replace("(r)", "").replace("/", "-")
    model = report["target"]["model"].replace("builtin:", "").replace("/", "-")
    stem = f"{report['date']}-search-cost-{report['device']}-{model}"
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(report, indent=1, default=str))
    atomic_write_text(out_dir / f"{stem}.md", markdown(report, slug))
    print(f"wrote {out_dir / stem}.md and .json")


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}{unit}"
    return f"{value}{unit}"


def markdown(report: dict[str, Any], slug: str) -> str:
    t = report["target"]
    v = report["versions"]
    lines = [f"# Search cost: {t['model']} {t['width']}x{t['height']}, {t['steps']} steps, on {report['device_name']}",
             "", f"- device: **{report['device_name']}** ({report['device']}); date {report['date']}",
             f"- versions: python {v.get('python')}, torch {v.get('torch')}, diffusers {v.get('diffusers')}, "
             f"optuna {v.get('optuna')}, autotune {v.get('autotune')}",
             f"- command: `{report['command']}`; wall time {report['wall_s']} s",
             "- latencies are wall-clock seconds per image on this device; memory is not part of this benchmark", ""]
    s = report["spread"]
    lines += ["## Spread of one assignment over separate trials", "",
              f"spread (max - min) / median of the trial medians: **{_fmt(s['spread'] and 100 * s['spread'], '%')}**", "",
              "| trial | median | runs | 95% CI half-width | overhead |", "|---|---|---|---|---|"]
    for r in s["rows"]:
        lines.append(f"| {r['trial']} | {_fmt(r.get('latency_median_s'), ' s')} | {r.get('runs', '-')} | "
                     f"{_fmt(r.get('ci_rel_half_width') and 100 * r['ci_rel_half_width'], '%')} | "
                     f"{_fmt(r.get('overhead_s'), ' s')} |")
    for entry in report["searches"]:
        short = entry["short"]
        lines += ["", f"## Default search, seed {short['seed']}: {short['measured']} trials in {short['wall_s']} s "
                  f"(stopped by {short['stopped_by']})", "",
                  f"median overhead per trial: **{_fmt(short['median_overhead_s'], ' s')}**; "
                  f"winner: {short['best'] and short['best']['settings']} "
                  f"{_fmt(short['best'] and short['best']['latency_median_s'], ' s')}", ""]
        if "long" in entry:
            long = entry["long"]
            lines.append(f"{long['measured']}-trial search: best {long['best'] and long['best']['settings']} "
                         f"{_fmt(long['best'] and long['best']['latency_median_s'], ' s')}; "
                         f"regret of the default search: **{_fmt(entry.get('regret') is not None and 100 * entry['regret'], '%')}**")
            lines.append("")
        lines += ["| trial | settings | outcome | median | ±CI | runs | " + " | ".join(p[:-2] for p in PHASES) + " |",
                  "|---" * (6 + len(PHASES)) + "|"]
        for r in short["rows"]:
            lines.append(f"| {r['trial']} | {r['settings']} | {r['outcome']} | {_fmt(r['latency_median_s'], ' s')} | "
                         f"{_fmt(r['ci_rel_half_width'] and 100 * r['ci_rel_half_width'], '%')} | {r['runs']} | "
                         + " | ".join(_fmt(r.get(p)) for p in PHASES) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
