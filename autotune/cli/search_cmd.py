"""`autotune search`: measure candidate settings under a ceiling and write the winning profile."""
from __future__ import annotations

import argparse
import textwrap
import sys
from pathlib import Path
from typing import Any

from autotune.cli.format import check_output_path, print_json, seconds, settings_diff, size, table
from autotune.cli.target_args import add_target_arguments, target_from_args


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "search", help="measure settings under a memory ceiling, write the fastest as a profile",
        description=textwrap.fill("Search the memory/speed settings valid for this model and device, measuring "
                    "each trial in its own process, and write the fastest one that fits under "
                    "--max-vram as a profile YAML. Finished trials are kept in --run-dir: an "
                    "interrupted search continues with --resume.", width=88),
        epilog="examples:\n  autotune search --max-vram 2GB --trials 8 --out profiles/example-cpu.yaml\n"
               "  autotune search --model builtin:sd15 --max-vram 8GB --batch 4 --trials 30\n"
               "  autotune search --model ./my-sd-folder --max-vram 12GB --resume\n\n"
               "sizes: '8GB' and '8GiB' both mean 8 * 2**30 bytes, as GPUs are labelled.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(p, model_default_help="builtin:sd15 on a GPU, builtin:tiny-sd on CPU")
    p.add_argument("--trials", type=int, default=20, help="distinct settings to measure (default: 20)")
    p.add_argument("--out", type=Path, help="profile path (default: profiles/<model>-<W>x<H>-b<batch>-<ceiling>-<device>.yaml)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: auto = cuda when present)")
    p.add_argument("--resume", action="store_true", help="continue the latest search of this same target")
    p.add_argument("--run-dir", type=Path, default=Path(".autotune"), help="where studies and trial logs live (default: .autotune)")
    p.add_argument("--storage", help="Optuna storage URL instead of the run-dir journal, e.g. sqlite:///s.db, postgresql://...")
    p.add_argument("--seed", type=int, default=0, help="sampler and image seed (default: 0)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per trial, after one warm-up (default: 3)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before a trial counts as hung (default: 600)")
    p.add_argument("--no-planner", action="store_true",
                   help="measure every candidate the sampler proposes, without memory predictions")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="start no new trial after this many seconds (default: no limit)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def build_target(args: argparse.Namespace) -> Any:
    from autotune import hardware
    from autotune.errors import InvalidTargetError
    from autotune.units import parse_size

    parse_size(args.max_vram)  # the most common mistake: say it before anything slower
    if args.trials < 1:
        raise InvalidTargetError(f"--trials must be 1 or more, got {args.trials}")
    if args.timeout <= 0:
        raise InvalidTargetError(f"--timeout must be more than 0 seconds, got {args.timeout:g}")
    if args.time_budget is not None and args.time_budget <= 0:
        raise InvalidTargetError(f"--time-budget must be more than 0 seconds, got {args.time_budget:g}")
    if args.runs < 1:
        raise InvalidTargetError(f"--runs must be 1 or more, got {args.runs}")
    device = hardware.default_device() if args.device == "auto" else args.device
    if device == "cuda":
        hardware.require_gpu()
    return target_from_args(args, device, "builtin:sd15" if device == "cuda" else "builtin:tiny-sd")


def default_out(target: Any) -> Path:
    model = target.model.replace("builtin:", "").replace("/", "-")
    gib = target.max_vram / 2**30
    return Path("profiles") / f"{model}-{target.width}x{target.height}-b{target.batch}-{gib:g}GB-{target.device}.yaml"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from autotune.errors import NoFeasibleTrialError
    from autotune.tune import finish, no_feasible_message, space_for, start_search

    target = build_target(args)
    out = check_output_path(args.out or default_out(target), (".yaml", ".yml"), "--out")
    space = space_for(target, args.include, args.exclude)
    search = start_search(target, space=space, run_dir=args.run_dir, storage=args.storage,
                          resume=args.resume, seed=args.seed, trial_timeout_s=args.timeout,
                          runs=args.runs, use_planner=not args.no_planner)
    _print_header(target, space)
    bar = tqdm(total=args.trials, desc="trials", unit="trial", file=sys.stderr, dynamic_ncols=True)

    def on_trial(record: Any, done: int, best: Any) -> None:
        bar.update(1)
        best_text = seconds(best.measurement.latency_median_s) if best else "none feasible yet"
        bar.set_postfix_str(f"last: {record.outcome}, best: {best_text}")

    try:
        result = finish(search, search.run(args.trials, on_trial=on_trial, time_budget_s=args.time_budget))
    finally:
        bar.close()
    trials = result.search
    if args.json:
        print_json({"study": trials.study_name, "trials": [_record_json(r) for r in trials.records],
                    "pruned": [_record_json(r) for r in trials.pruned],
                    "profile": result.profile.to_dict() if result.profile else None})
    else:
        _print_trials(trials, space.default())
    if result.profile is None:
        raise NoFeasibleTrialError(no_feasible_message(trials, result.log_dir))
    result.profile.save(out)
    if not args.json:
        best = result.profile.best
        print(f"\nbest: {settings_diff(best.settings, space.default())}  "
              f"{seconds(best.latency_median_s)} median, {size(best.peak_bytes)} peak ({best.peak_metric})")
        print(f"profile written to {out}  (show it: autotune show {out})")
        fp = result.profile.fingerprint
        if fp.get("ceiling_mode") == "emulated":
            print(f"note: the {size(target.max_vram)} ceiling was emulated on a {fp.get('device_name')} "
                  f"({size(fp.get('total_memory_bytes'))}) by capping PyTorch's share of it; allocation "
                  "patterns differ on a real card of that size: confirm the profile there")
    return 0


def _print_header(target: Any, space: Any) -> None:
    print(f"target: {target.model} {target.width}x{target.height} batch {target.batch}, "
          f"{target.steps} steps, ceiling {size(target.max_vram)} ({target.max_vram} bytes) on {target.device}",
          file=sys.stderr)
    print(f"space: {space.size()} valid combinations of {', '.join(space.searched_knobs)}", file=sys.stderr)
    for status in space.statuses:
        if status.state == "excluded":
            print(f"  not searched: {status.knob}={status.value}: {status.reason}", file=sys.stderr)
    if target.device == "cpu":
        print("note: on CPU, memory is the peak of live tensors in RAM, not VRAM", file=sys.stderr)


def _record_json(record: Any) -> dict[str, Any]:
    m = record.measurement
    return {"number": record.number, "outcome": record.outcome, "settings": record.assignment,
            "latency_median_s": m.latency_median_s, "latency_p90_s": m.latency_p90_s,
            "peak_bytes": m.peak_bytes, "peak_metric": m.peak_metric, "memory": m.memory,
            "predicted": record.prediction, "error": m.error}


def _print_trials(search: Any, defaults: dict[str, Any]) -> None:
    rows = [(r.number, r.outcome, seconds(r.measurement.latency_median_s), size(r.measurement.peak_bytes),
             size(r.prediction["total_bytes"]) if r.prediction else "-",
             r.measurement.error or settings_diff(r.assignment, defaults)) for r in search.records]
    print(table(["trial", "outcome", "latency", "peak", "predicted", "settings (vs defaults)"], rows))
    if search.pruned:
        print(f"not measured: {len(search.pruned)} candidate(s) the planner predicted over the ceiling")
