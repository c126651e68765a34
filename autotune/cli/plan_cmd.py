"""`autotune plan`: predicted peak memory of every candidate, without running anything."""
from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autotune.cli.defaults import MODEL_DEFAULT_HELP, add_device_argument, default_model, resolve_device
from autotune.cli.format import print_json, settings_diff, size, table
from autotune.cli.target_args import add_target_arguments, target_from_args

if TYPE_CHECKING:
    from autotune.knobs.space import Assignment, SearchSpace
    from autotune.planner.prediction import Prediction
    from autotune.target import Target

    #: One candidate and its prediction, as the table and --json list them.
    Row = tuple[Assignment, Prediction]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plan", help="predict each candidate's peak memory, on any machine (no GPU, no run)",
        description=textwrap.fill("Predict the peak device memory of every candidate setting from fake-tensor traces "
                    "of the real diffusers code (no GPU, no weights, no run), with where the peak "
                    "happens. With --max-vram, mark what fits under it and list it first. Candidates "
                    "are listed likely-fastest first.", width=88),
        epilog="examples:\n  autotune plan --model builtin:sd15 --device cuda --height 512 --width 512 --batch 4\n"
               "  autotune plan --model builtin:sd15 --device cuda --batch 4 --max-vram 8GB",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(p, model_default_help=MODEL_DEFAULT_HELP, ceiling_required=False)
    add_device_argument(p, note="cuda plans for a GPU even on a machine without one")
    p.add_argument("--top", type=int, default=14, help="rows to print (default: 14; --json lists all)")
    p.add_argument("--every", action="store_true",
                   help=f"one row per candidate (default: one per combination of {_spread_names()}, its "
                        "likely-fastest)")
    p.add_argument("--json", action="store_true", help="print every candidate's prediction as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autotune.errors import InvalidTargetError
    from autotune.planner.seeding import speed_prior

    if args.top < 1:
        raise InvalidTargetError(f"--top must be 1 or more, got {args.top}")
    max_vram: int | None = args.max_vram  # bytes: parsed with the flags (target_args.SizeAction)
    device = resolve_device(args.device)
    target = target_from_args(args, device, default_model(device))
    start = time.monotonic()
    space, rows = _predict_all(target, args.include, args.exclude, device_was_auto=args.device == "auto")
    defaults = space.default()
    elapsed = time.monotonic() - start
    max_ram = target.max_ram
    ceilings = [f"{flag} {size(b)} ({b} bytes)" for flag, b in (("ceiling", max_vram), ("--max-ram", max_ram))
                if b is not None]

    def fits(p: Prediction) -> bool:
        return ((max_vram is None or p.total_bytes <= max_vram)
                and (max_ram is None or p.host_bytes is None or p.host_bytes <= max_ram))

    prior = speed_prior(target.device)
    rows.sort(key=lambda r: (not fits(r[1]), prior(r[0])))
    feasible = sum(fits(p) for _, p in rows)
    smallest = min(rows, key=lambda r: r[1].total_bytes)
    if args.json:
        print_json({"target": {**target.to_dict(), "max_vram": max_vram}, "candidates": len(rows),
                    "feasible": feasible if ceilings else None, "seconds": round(elapsed, 2),
                    "smallest": {"settings": smallest[0], **smallest[1].to_dict()},
                    "plans": [{"settings": a, "fits": fits(p) if ceilings else None, **p.to_dict()}
                              for a, p in rows]})
        return 0
    summary = (f"{', '.join(ceilings)}: {feasible} of {len(rows)} candidates predicted to fit" if ceilings
               else f"{len(rows)} candidates")
    print(f"planned {summary} in {elapsed:.1f} s", file=sys.stderr)
    _print_table(rows, args, target.device, bool(ceilings), fits, defaults)
    if feasible == 0 and ceilings:
        print("\n" + _nothing_fits(rows, smallest, max_vram, max_ram, defaults))
    return 0


def _nothing_fits(rows: list[Row], smallest: Row, max_vram: int | None, max_ram: int | None,
                  defaults: Assignment) -> str:
    """Which ceiling keeps everything out, and what the least demanding candidate needs."""
    settings, prediction = smallest
    if max_vram is not None and prediction.total_bytes > max_vram:
        return (f"nothing fits under {size(max_vram)}: the smallest candidate ({settings_diff(settings, defaults)}) "
                f"needs {size(prediction.total_bytes)}; raise --max-vram to at least {size(prediction.total_bytes)} "
                "or lower --batch/--height/--width")
    under_vram = [r for r in rows if max_vram is None or r[1].total_bytes <= max_vram]
    settings, prediction = min(under_vram, key=lambda r: r[1].host_bytes or 0)
    return (f"nothing fits under --max-ram {size(max_ram or 0)}: the candidate needing the least host RAM "
            f"({settings_diff(settings, defaults)}) needs {size(prediction.host_bytes or 0)}; raise --max-ram "
            f"to at least {size(prediction.host_bytes or 0)}")


def _predict_all(target: Target, include: list[str], exclude: list[str], *,
                 device_was_auto: bool) -> tuple[SearchSpace, list[Row]]:
    """Every candidate with its prediction; says what it is doing on stderr (traces take 1-20 s)."""
    from tqdm import tqdm

    from autotune.planner import Planner
    from autotune.jobs import space_for

    space = space_for(target, include, exclude)
    hint = " (--device cuda plans for a GPU)" if device_was_auto and target.device == "cpu" else ""
    frames = f", {target.frames} frames," if target.frames else ""
    print(f"planning {target.model} {target.width}x{target.height}{frames} batch {target.batch} on "
          f"{target.device}{hint}: tracing {space.size()} candidates with fake tensors "
          "(no weights, nothing runs)...", file=sys.stderr)
    planner = Planner(target)
    rows = []
    with tqdm(total=space.size(), desc="planning", unit="candidate", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty()) as bar:
        for assignment in space:
            rows.append((assignment, planner.predict(assignment)))
            bar.update(1)
    return space, rows


def _print_table(rows: list[Row], args: argparse.Namespace, device: str, ceilinged: bool,
                 fits: Callable[[Prediction], bool], defaults: Assignment) -> None:
    shown = rows if args.every else _one_per_placement(rows)
    on_gpu = device == "cuda"
    if on_gpu:
        print("predicted = weights + activations + workspace + allocator cache + CUDA context "
              "(NVML process peak); host RAM = what the weights take in RAM at their peak\n")
    else:
        print("predicted = weights + activations (peak of live tensors in RAM, not VRAM)\n")
    headers = ["predicted", *(["fits"] if ceilinged else []), "weights", "activations",
               "peak during", *(["workspace+cache", "context", "host RAM"] if on_gpu else []),
               "settings (vs defaults)"]
    table_rows = []
    for a, p in shown[:args.top]:
        gpu_only = [size(p.workspace_bytes + p.allocator_bytes), size(p.runtime_bytes),
                    size(p.host_bytes) if p.host_bytes is not None else "-"]
        table_rows.append((size(p.total_bytes), *(["yes" if fits(p) else "no"] if ceilinged else []),
                           size(p.resident_weights_bytes), size(p.activation_bytes), p.peak_phase,
                           *(gpu_only if on_gpu else []), settings_diff(a, defaults)))
    print(table(headers, table_rows))
    if len(shown) > args.top:
        print(f"... {len(shown) - args.top} more rows (--top N)")
    if not args.every:
        print(f"one row per {_spread_names()}, the likely-fastest of each; --every lists all {len(rows)}")


def _spread_names() -> str:
    """'dtype and offload': the knobs whose every combination gets a row (`SpeedPrior.spread`)."""
    from autotune import knobs

    return " and ".join(k.name for k in knobs.all_knobs() if k.speed.spread)


def _one_per_placement(rows: list[Row]) -> list[Row]:
    """Keep the first row (rows are already in display order) of each combination of the spread knobs."""
    from autotune.planner.seeding import spread_key

    seen, kept = set(), []
    for assignment, prediction in rows:
        key = spread_key(assignment)
        if key not in seen:
            seen.add(key)
            kept.append((assignment, prediction))
    return kept
