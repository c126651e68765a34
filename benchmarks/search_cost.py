#!/usr/bin/env python3
"""What a search costs and how far its answer can be trusted, on the device it runs on.

Three measurements, in this order, into one results file (.md and .json) named by the date,
the device and the model, rewritten after each so a run killed at any point keeps what it measured:
1. Per-trial overhead and phases: a default search (`--trials`, seed 0, `--time-budget`); for
   every trial its wall time split into spawn, weights, build, apply, first run, timed runs,
   release, and the overhead (wall minus warm-up and timed runs), and whether the warm worker was
   reused (no spawn or import phase: the worker of an earlier trial measured it).
2. Spread: one assignment (the defaults) measured in `--repeat` separate trials, one after the
   other as a search would; spread = (max - min) / median of the trial medians.
3. Regret: for each of `--seeds` seeds, the default search's winner against the winner of a search
   `--long-factor` times longer with the same seed. The two searches' medians were measured
   minutes apart and cannot rank each other, so the two winners are measured again *side by
   side*, the way the search's confirmation does it (`SubprocessMeasurer.compare`: each arm in a
   fresh worker, the first round discarded, interleaved rounds in rotating order, `--sessions`
   sessions of new workers in alternating order). regret = short winner / long winner - 1 (0 is
   optimal) is the mean of the sessions' log-ratios with its 95% t interval over the sessions
   (confirm.py's statistics). The long search is named by what it measured: its trials, and
   whether they covered every valid combination of the space.
The load average is recorded before and after each step (the machine may be shared).
With `--budget-s` no spread trial starts once the whole run has spent it.

    python benchmarks/search_cost.py --model builtin:tiny-sd            # CPU, hours on 2 cores
    python benchmarks/search_cost.py --model builtin:tiny-sd --height 64 --width 64 --steps 4 \
        --max-vram 2GB --trials 8 --long-factor 2 --seeds 1 --sessions 3 --repeat 2 \
        --max-run-time 2                                              # the 2026-12-02 CPU run
    python benchmarks/search_cost.py --model builtin:sd15 --height 128 --width 128 --steps 4 \\
        --trials 6 --no-regret                                         # CPU, SD1.5 architecture
    python benchmarks/search_cost.py --model builtin:sd15 --device cuda --height 512 --width 512

Run it on a quiet machine: another busy process on the same cores is noise the numbers will show.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
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
from autotune.knobs.space import assignment_key  # noqa: E402
from autotune.measure.measurer import SubprocessMeasurer, TrialJob  # noqa: E402
from autotune.measure.timing import mean_interval  # noqa: E402
from autotune.search import confirm, confirm_plan  # noqa: E402
from autotune.profiles.profile import atomic_write_text  # noqa: E402
from autotune.target import Target  # noqa: E402
from autotune.jobs import space_for, tune  # noqa: E402
from autotune.units import parse_size  # noqa: E402

DEFAULTS = {k.name: k.default for k in all_knobs()}
PHASES = ("spawn_s", "import_s", "device_setup_s", "load_weights_s", "build_s", "apply_s", "to_device_s",
          "first_run_s", "timed_s",
          "memory_run_s", "release_s", "overhead_s", "wall_s")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: how busy the shared machine was."""
    return [round(v, 2) for v in os.getloadavg()]


def worker_reused(timings: dict[str, float]) -> bool:
    """A trial the warm worker of an earlier one measured: no process was started for it."""
    return "spawn_s" not in timings and "import_s" not in timings


def overhead_and_search(target: Target, trials: int, seed: int, run_dir: Path, **options: Any) -> dict[str, Any]:
    start = time.monotonic()
    result = tune(target, trials=trials, run_dir=run_dir, seed=seed, **options).search
    wall = time.monotonic() - start
    rows = [{"trial": r.number, "settings": settings_diff(r.assignment, DEFAULTS), "outcome": r.outcome,
             "latency_median_s": r.measurement.latency_median_s,
             "ci_rel_half_width": r.measurement.timing.ci_rel_half_width if r.measurement.timing else None,
             "runs": len(r.measurement.latencies_s),
             "worker_reused": worker_reused(r.measurement.phases.to_dict()),
             "worker_pid": r.measurement.device_info.worker_pid,
             **{k: round(v, 3) for k, v in r.measurement.phases.to_dict().items() if k in PHASES}}
            for r in result.records]
    best = result.best
    later = rows[1:]
    return {"seed": seed, "trials": trials, "wall_s": round(wall, 1), "stopped_by": result.stop_reason,
            "time_budget_s": options.get("time_budget_s"),
            "measured": len(result.records), "rows": rows,
            "distinct_measured": len({assignment_key(r.assignment) for r in result.records}),
            "pruned": len(result.pruned),
            "median_overhead_s": _median([r["overhead_s"] for r in rows if "overhead_s" in r]),
            "median_overhead_later_s": _median([r["overhead_s"] for r in later if "overhead_s" in r]),
            "later_trials_reused": sum(r["worker_reused"] for r in later), "later_trials": len(later),
            "best": None if best is None else {
                "trial": best.number, "settings": settings_diff(best.assignment, DEFAULTS),
                "assignment": dict(best.assignment), "peak_bytes": best.measurement.peak_bytes,
                "latency_median_s": best.measurement.latency_median_s},
            "confirmation": result.confirmation.to_dict() if result.confirmation else None}


def covers_space(search: dict[str, Any], space_size: int) -> bool:
    """Whether a search measured (or the planner pruned) every valid combination of the space."""
    return search["distinct_measured"] + search["pruned"] >= space_size


def side_by_side(target: Target, short: dict[str, Any], long: dict[str, Any], sessions: int, log_dir: Path,
                 time_cap_s: float, timeout_s: float = 3600.0, measurer: Any = None) -> dict[str, Any]:
    """The short and the long search's winners measured again side by side, as the search's
    confirmation measures its finalists (finalists.py, without its racing: a fixed number of
    sessions, so every seed's interval rests on as many); regret = short / long - 1 per session's
    log-ratio, with its 95% t interval over the sessions. The same settings need no measurement."""
    if assignment_key(short["assignment"]) == assignment_key(long["assignment"]):
        return {"same_settings": True, "regret": 0.0, "regret_ci": [0.0, 0.0], "sessions": 0}
    arms = [confirm_plan.Candidate(0, short["assignment"], short["latency_median_s"], short.get("peak_bytes") or 0),
            confirm_plan.Candidate(1, long["assignment"], long["latency_median_s"], long.get("peak_bytes") or 0)]
    jobs = {a.number: TrialJob(target, dict(a.settings), number=a.number, time_cap_s=time_cap_s) for a in arms}
    deadline = time.monotonic() + timeout_s
    rounds, runs = confirm_plan.rounds(target.device), confirm_plan.runs_per_round(target.device)
    timed: list[dict[int, list[float]]] = []
    notes: list[str] = []
    for s in range(sessions):
        order = [0, 1] if s % 2 == 0 else [1, 0]  # new workers, the other order
        session_measurer = measurer or SubprocessMeasurer(log_dir=log_dir / f"session-{s}")
        try:
            medians, note = session_measurer.compare([jobs[n] for n in order], rounds + confirm_plan.WARMUP_ROUNDS,
                                                     runs, deadline)
        finally:
            if measurer is None:
                session_measurer.close()
        if note:
            notes.append(note)
        session = {order[i]: values[confirm_plan.WARMUP_ROUNDS:] for i, values in medians.items()}
        if not all(session.get(n) for n in (0, 1)):
            break  # cut short (time, a failed load): what was complete decides
        timed.append(session)
    logs = confirm.session_log_ratios(0, 1, timed)
    interval = mean_interval(logs)
    decided = confirm.decide(arms, timed, runs, "; ".join(notes)) if timed else None
    return {"same_settings": False, "sessions": len(timed), "rounds_per_session": rounds,
            "runs_per_round": runs, "session_log_ratios": logs,
            "regret": math.exp(statistics.fmean(logs)) - 1 if logs else None,
            "regret_ci": [math.exp(interval[1]) - 1, math.exp(interval[2]) - 1] if interval else None,
            "note": "; ".join(notes), "confirmation": decided.to_dict() if decided else None}


def spread(target: Target, repeat: int, log_dir: Path, deadline: float = math.inf,
           time_cap_s: float = 10.0) -> dict[str, Any]:
    """`repeat` trials of the defaults in one measurer (warm worker kept, as a search does); no
    trial starts after `deadline` (time.monotonic()), and none runs past it."""
    medians, rows = [], []
    with SubprocessMeasurer(timeout_s=900, log_dir=log_dir) as measure:
        for i in range(repeat):
            left = deadline - time.monotonic()
            if left <= 0:
                rows.append({"trial": i, "error": "not run: time budget spent"})
                continue
            m = measure(TrialJob(target, dict(DEFAULTS), number=i, time_cap_s=time_cap_s),
                        timeout_s=None if math.isinf(left) else left)
            if m.status != "ok":
                rows.append({"trial": i, "error": m.error})
                continue
            medians.append(m.latency_median_s)
            rows.append({"trial": i, "latency_median_s": m.latency_median_s, "runs": len(m.latencies_s),
                         "ci_rel_half_width": m.timing.ci_rel_half_width if m.timing else None,
                         "worker_reused": worker_reused(m.phases.to_dict()),
                         "overhead_s": round(m.phases.overhead_s or 0.0, 3)})
    med = _median(medians)
    return {"settings": "defaults", "rows": rows, "trials_ok": len(medians),
            "spread": (max(medians) - min(medians)) / med if med else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:tiny-sd")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max-vram", default="8GB")
    p.add_argument("--trials", type=int, default=20, help="the default search's trials (default: 20)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="the default search's time budget (as `autotune search --time-budget`)")
    p.add_argument("--budget-s", type=float, help="whole run: no spread trial starts after it")
    p.add_argument("--max-run-time", type=float, default=10.0, metavar="SECONDS",
                   help="seconds of timed runs per trial (default: 10)")
    p.add_argument("--long-factor", type=int, default=5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sessions", type=int, default=4,
                   help="side-by-side sessions of the two winners per seed (default: 4; at least 2 for an interval)")
    p.add_argument("--repeat", type=int, default=5, help="separate trials of one assignment (default: 5)")
    p.add_argument("--no-regret", action="store_true", help="skip the regret searches (the slow part)")
    p.add_argument("--exclude", action="append", default=[], help="passed to the searches, e.g. compile")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--run-dir", type=Path, help="where studies and trial logs go (default: a temp dir)")
    args = p.parse_args(argv)

    started = time.monotonic()
    deadline = math.inf if args.budget_s is None else started + args.budget_s
    target = Target(model=args.model, height=args.height, width=args.width, batch=1, steps=args.steps,
                    max_vram=parse_size(args.max_vram), device=args.device)
    fp = hardware.fingerprint(args.device)
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="search-cost-"))
    space_size = space_for(target, exclude=args.exclude).size()
    report: dict[str, Any] = {
        "benchmark": "search_cost", "date": dt.date.today().isoformat(), "device": args.device,
        "device_name": fp.device_name, "driver": fp.driver, "versions": fp.versions,
        "target": target.to_dict(), "command": " ".join(["search_cost.py", *(argv if argv is not None else sys.argv[1:])]),
        "cpu_count": os.cpu_count(), "space_size": space_size, "load": [["start", load_average()]],
        "searches": [],
    }
    search_options: dict[str, Any] = {"exclude": args.exclude, "time_cap_s": args.max_run_time}

    def save(step: str) -> None:
        report["load"].append([step, load_average()])
        report["wall_s"] = round(time.monotonic() - started, 1)
        write(report, args.out_dir)

    for seed in range(1 if args.no_regret else args.seeds):
        print(f"search seed {seed}: {args.trials} trials", flush=True)
        short = overhead_and_search(target, args.trials, seed, run_dir / f"short-{seed}",
                                    time_budget_s=args.time_budget, **search_options)
        entry: dict[str, Any] = {"short": short}
        report["searches"].append(entry)
        print(f"  median overhead {short['median_overhead_s']} s; worker reused in "
              f"{short['later_trials_reused']} of {short['later_trials']} later trials", flush=True)
        save(f"short search, seed {seed}")
        if seed == 0:
            print(f"spread: {args.repeat} trials of the defaults on {fp.device_name}", flush=True)
            report["spread"] = spread(target, args.repeat, run_dir / "spread-logs", deadline, args.max_run_time)
            print(f"  spread {report['spread']['spread']}", flush=True)
            save("spread")
        if not args.no_regret:
            print(f"search seed {seed}: {args.trials * args.long_factor} trials", flush=True)
            long = overhead_and_search(target, args.trials * args.long_factor, seed, run_dir / f"long-{seed}",
                                       **search_options)
            entry["long"] = {k: v for k, v in long.items() if k != "rows"}
            entry["long"]["covers_space"] = covers_space(long, space_size)
            save(f"long search, seed {seed}")
            if short["best"] and long["best"]:
                entry["search_medians_ratio"] = short["best"]["latency_median_s"] / long["best"]["latency_median_s"] - 1
                print(f"  side by side: {short['best']['settings']} against {long['best']['settings']}", flush=True)
                entry["side_by_side"] = side_by_side(target, short["best"], long["best"], args.sessions,
                                                     run_dir / f"side-by-side-{seed}", args.max_run_time)
                entry["regret"] = entry["side_by_side"]["regret"]
            print(f"  regret {entry.get('regret')}", flush=True)
            save(f"side by side, seed {seed}")
    measured = report["searches"][0]["short"]["measured"] and report.get("spread", {}).get("trials_ok")
    return 0 if measured else 1  # a search or a spread that measured nothing is a failed step


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("(r)", "").replace("(tm)", "")).strip("-")


def results_stem(report: dict[str, Any]) -> str:
    """<date>-search-cost-<device name>-<model>: the file names the device that produced it."""
    model = report["target"]["model"].replace("builtin:", "").replace("/", "-")
    return f"{report['date']}-search-cost-{slug(report['device_name'])}-{model}"


def write(report: dict[str, Any], out_dir: Path) -> None:
    stem = results_stem(report)
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(report, indent=1, default=str))
    atomic_write_text(out_dir / f"{stem}.md", markdown(report))
    print(f"wrote {out_dir / stem}.md and .json", flush=True)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}{unit}"
    return f"{value}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.3f}%"


def long_search_name(long: dict[str, Any], space_size: int | None) -> str:
    """The long search by what it measured: its trials, and whether they covered the space."""
    measured = long.get("distinct_measured", long["measured"])
    if space_size is None:
        return f"{long['measured']}-trial search (stopped by {long['stopped_by']})"
    whole = long.get("covers_space")
    coverage = (f"every one of the {space_size} valid combinations" if whole
                else f"{measured} of the {space_size} valid combinations")
    return f"{long['measured']}-trial search ({coverage}; stopped by {long['stopped_by']})"


def regret_lines(entry: dict[str, Any], space_size: int | None) -> list[str]:
    """The long search's winner, and the regret as measured side by side with its interval."""
    long = entry["long"]
    lines = [f"{long_search_name(long, space_size)}: winner {long['best'] and long['best']['settings']} "
             f"{_fmt(long['best'] and long['best']['latency_median_s'], ' s')} in its own search"]
    side = entry.get("side_by_side")
    if side is None:  # an older results file: the ratio of two searches' medians
        lines.append(f"regret of the default search (search medians): **{_pct(entry.get('regret'))}**")
        return lines
    if side["same_settings"]:
        lines.append("both searches named the same settings: regret **0** (nothing to re-measure)")
        return lines
    ci = side.get("regret_ci")
    lines.append(f"regret of the default search, the two winners measured side by side in {side['sessions']} "
                 f"sessions of {side['rounds_per_session']} rounds x {side['runs_per_round']} runs: "
                 f"**{_pct(side['regret'])}** (95% interval over sessions "
                 f"{'-' if ci is None else f'{_pct(ci[0])} to {_pct(ci[1])}'}); "
                 f"the ratio of the two searches' own medians, measured minutes apart, read "
                 f"{_pct(entry.get('search_medians_ratio'))}")
    conf = side.get("confirmation")
    if conf:
        lines.append("")
        lines += ["| arm | settings | search median | side-by-side median | vs faster |", "|---|---|---|---|---|"]
        for c in conf["candidates"]:
            name = "default search" if c["number"] == 0 else "long search"
            lines.append(f"| {name} | {settings_diff(c['settings'], DEFAULTS)} | {_fmt(c['search_latency_s'], ' s')} | "
                         f"{_fmt(c['confirmed_latency_s'], ' s')} | {_fmt(c.get('vs_winner'))} |")
    if side.get("note"):
        lines.append(f"note: {side['note']}")
    return lines


def markdown(report: dict[str, Any]) -> str:
    t = report["target"]
    v = report["versions"]
    lines = [f"# Search cost: {t['model']} {t['width']}x{t['height']}, {t['steps']} steps, on {report['device_name']}",
             "", f"- device: **{report['device_name']}** ({report['device']}), driver {report.get('driver') or '-'}; "
             f"date {report['date']}",
             f"- versions: python {v.get('python')}, torch {v.get('torch')}, diffusers {v.get('diffusers')}, "
             f"optuna {v.get('optuna')}, autotune {v.get('autotune')}",
             f"- command: `{report['command']}`; wall time {report.get('wall_s')} s",
             f"- load average (1, 5, 15 min) on {report.get('cpu_count') or '?'} cores: "
             + "; ".join(f"{step}: {', '.join(map(str, avg))}" for step, avg in report.get("load", [])),
             "- latencies are wall-clock seconds per image on this device; memory is not part of this benchmark", ""]
    for entry in report["searches"]:
        short = entry["short"]
        budget = short.get("time_budget_s")
        lines += ["", f"## Default search, seed {short['seed']}: {short['measured']} trials in {short['wall_s']} s "
                  f"(stopped by {short['stopped_by']}{f'; budget {budget:.0f} s' if budget else ''})", "",
                  f"median overhead per trial: **{_fmt(short['median_overhead_s'], ' s')}**, "
                  f"second and later trials **{_fmt(short.get('median_overhead_later_s'), ' s')}**; "
                  f"worker reused in {short.get('later_trials_reused')} of {short.get('later_trials')} later trials; "
                  f"winner: {short['best'] and short['best']['settings']} "
                  f"{_fmt(short['best'] and short['best']['latency_median_s'], ' s')}", ""]
        if "long" in entry:
            lines += regret_lines(entry, report.get("space_size")) + [""]
        lines += ["| trial | settings | outcome | median | ±CI | runs | reused | " + " | ".join(p[:-2] for p in PHASES) + " |",
                  "|---" * (7 + len(PHASES)) + "|"]
        for r in short["rows"]:
            lines.append(f"| {r['trial']} | {r['settings']} | {r['outcome']} | {_fmt(r['latency_median_s'], ' s')} | "
                         f"{_pct(r['ci_rel_half_width'])} | {r['runs']} | {'yes' if r.get('worker_reused') else 'no'} | "
                         + " | ".join(_fmt(r.get(p)) for p in PHASES) + " |")
        if short.get("seed") == 0 and "spread" in report:
            s = report["spread"]
            lines += ["", "## Spread of one assignment over separate trials", "",
                      f"spread (max - min) / median of the {s.get('trials_ok')} trial medians: **{_pct(s['spread'])}**", "",
                      "| trial | median | runs | 95% CI half-width | reused | overhead | note |", "|---|---|---|---|---|---|---|"]
            for r in s["rows"]:
                reused = r.get("worker_reused")
                lines.append(f"| {r['trial']} | {_fmt(r.get('latency_median_s'), ' s')} | {r.get('runs', '-')} | "
                             f"{_pct(r.get('ci_rel_half_width'))} | {'-' if reused is None else ('yes' if reused else 'no')} | "
                             f"{_fmt(r.get('overhead_s'), ' s')} | {r.get('error') or ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
