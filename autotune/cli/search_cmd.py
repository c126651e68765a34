"""`autotune search`: measure candidate settings under a ceiling and write the winning profile.

Progress goes to stderr, one line per finished trial as it finishes; the summary and the
profile's path go to stdout (or JSON with --json).
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune import knobs
from autotune.cli.defaults import MODEL_DEFAULT_HELP, add_device_argument, default_model, resolve_device
from autotune.cli.format import check_output_path, print_json, seconds, settings_diff, size
from autotune.cli.target_args import add_target_arguments, target_from_args
from autotune.search.options import DEFAULT_RUN_DIR, REFERENCE_DTYPES, STUDIES_FILE, SearchOptions

if TYPE_CHECKING:
    from autotune.knobs.space import Assignment, SearchSpace
    from autotune.measure.records import Measurement
    from autotune.search.trials import SearchResult, TrialRecord
    from autotune.target import Target

#: The summary and the trial lines fit this many columns.
WIDTH = 100


def add_parser(sub: Any) -> None:
    D = SearchOptions()  # noqa: N806 (the defaults, shown in the help)
    p = sub.add_parser(
        "search", help="measure settings under a memory ceiling, write the fastest as a profile",
        description=textwrap.fill(
            "Search the memory/speed settings valid for this model and device and write the fastest "
            "one that fits under --max-vram as a profile YAML. Trials run in a warm worker process "
            "(a fresh one after compile, an out-of-memory error or a crash); each is timed until "
            "its median is known within --precision or --max-run-time is spent. The top candidates "
            "are then re-measured side by side to confirm the winner. Finished trials are kept in "
            "--run-dir: an interrupted search continues with --resume.", width=88),
        epilog="examples:\n  autotune search --max-vram 2GB --trials 8 --out profiles/example-cpu.yaml\n"
               "  autotune search --model builtin:sd15 --max-vram 8GB --batch 4 --time-budget 600\n"
               "  autotune search --model ./my-sd-folder --max-vram 12GB --resume\n\n"
               "sizes: '8GB' and '8GiB' both mean 8 * 2**30 bytes, as GPUs are labelled.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(p, model_default_help=MODEL_DEFAULT_HELP)
    p.add_argument("--trials", type=int, default=D.trials, help=f"distinct settings to measure (default: {D.trials})")
    p.add_argument("--out", type=Path, help="profile path (default: profiles/<model>-<W>x<H>-b<batch>-<ceiling>-<device>.yaml)")
    add_device_argument(p)
    p.add_argument("--resume", action="store_true", help="continue the latest search of this same target")
    p.add_argument("--no-reuse", action="store_true",
                   help="measure everything again instead of reusing trials of earlier searches of this "
                        "model, size, batch and device under another ceiling")
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR,
                   help=f"where studies and trial logs live (default: {DEFAULT_RUN_DIR})")
    p.add_argument("--storage", help="Optuna storage URL instead of the run-dir journal, e.g. sqlite:///s.db, postgresql://...")
    p.add_argument("--study", metavar="NAME",
                   help="create or join the study NAME: every `autotune search` with the same --storage and "
                        "--study shares its trials (one process per GPU or machine), and --trials is the "
                        "study's total; a process that dies mid-trial has its trial retried by another")
    p.add_argument("--gpus", metavar="0,1,...",
                   help="start one search process per listed GPU on one shared study, then confirm the "
                        "winner and write the profile")
    _add_option_arguments(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def _add_option_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of SearchOptions, their defaults read from it."""
    D = SearchOptions()  # noqa: N806 (the defaults, shown in the help)
    p.add_argument("--seed", type=int, default=D.seed, help=f"sampler and image seed (default: {D.seed})")
    p.add_argument("--runs", type=int, default=D.runs, help=f"fewest timed runs per trial, after one warm-up (default: {D.runs})")
    p.add_argument("--precision", type=float, default=D.precision,
                   help="keep timing a trial until the 95%% interval of its median is within this "
                        f"fraction of it (default: {D.precision:g})")
    p.add_argument("--max-run-time", type=float, default=D.time_cap_s, metavar="SECONDS",
                   help=f"stop timing a trial after this many seconds of runs, precise or not (default: {D.time_cap_s:g})")
    p.add_argument("--min-sqnr", type=float, default=D.min_sqnr, metavar="DB",
                   help="quality floor: a lossy trial whose denoiser (on the reference's inputs) or VAE "
                        "decode (on its latent) is further than this from the reference's, per call "
                        "(SQNR, dB), is infeasible; exact settings must only stay finite, not flat and "
                        f"within float reordering of it; 0 judges lossy settings on the final image instead "
                        f"(--min-psnr) (default: {D.min_sqnr:g})")
    p.add_argument("--min-psnr", type=float, default=D.min_psnr, metavar="DB",
                   help="the floor on the final image (PSNR against the reference, dB) for lossy "
                        "settings whose error builds up across steps (cache) and trials without a "
                        f"per-call number; 0 turns it off (default: {D.min_psnr:g})")
    p.add_argument("--allow-unjudged", action="store_true",
                   help="when no quality reference can be made, still accept lossy trials, unjudged "
                        "(default: they are not feasible)")
    p.add_argument("--reference-dtype", choices=REFERENCE_DTYPES, default=D.reference_dtype,
                   help="precision of the reference output the quality guard compares with (default: "
                        "fp32; on a GPU the pipeline's native half precision is a common choice)")
    p.add_argument("--amortize", type=int, metavar="IMAGES",
                   help="images a process makes in its lifetime: rank by latency + compile time / IMAGES, "
                        "so a short job is not handed a long compile for a small gain (default: ignore "
                        "compile time)")
    p.add_argument("--no-artifacts", action="store_true",
                   help="do not build compile artifacts beside a compiled winner (see `autotune warmup`)")
    p.add_argument("--no-confirm", action="store_true",
                   help="do not re-measure the top candidates side by side at the end")
    p.add_argument("--timeout", type=float, default=D.trial_timeout_s,
                   help=f"seconds before a trial counts as hung (default: {D.trial_timeout_s:g})")
    p.add_argument("--no-planner", action="store_true",
                   help="measure every candidate the sampler proposes, without memory predictions")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="a wall for the whole search: no trial starts unless it is expected to fit, "
                        "one still running at the end is stopped (default: no limit)")


def options_from(args: argparse.Namespace) -> SearchOptions:
    """The search options of these flags (validated there: an error names the flag)."""
    return SearchOptions(trials=args.trials, seed=args.seed, runs=args.runs, precision=args.precision,
                         time_cap_s=args.max_run_time, trial_timeout_s=args.timeout, time_budget_s=args.time_budget,
                         min_psnr=args.min_psnr or None, min_sqnr=args.min_sqnr or None,
                         reference_dtype=args.reference_dtype,
                         allow_unjudged=args.allow_unjudged, amortize=args.amortize, confirm=not args.no_confirm,
                         reuse=not args.no_reuse, use_planner=not args.no_planner)


def build_target(args: argparse.Namespace) -> Target:
    """The target (the ceiling was parsed with the flags: the most common mistake is said first)."""
    from autotune import hardware

    options_from(args)
    device = resolve_device(args.device)
    if device == "cuda":
        hardware.require_gpu()
    return target_from_args(args, device, default_model(device))


def default_out(target: Target) -> Path:
    model = target.model.replace("builtin:", "").replace("/", "-")
    gib = target.max_vram / 2**30
    frames = f"-f{target.frames}" if target.frames else ""
    return Path("profiles") / (f"{model}-{target.width}x{target.height}{frames}-b{target.batch}-{gib:g}GB-"
                               f"{target.device}.yaml")


def run(args: argparse.Namespace) -> int:
    from autotune import jobs
    from autotune.errors import NoFeasibleTrialError

    target = build_target(args)
    options = options_from(args)
    out = check_output_path(args.out or default_out(target), (".yaml", ".yml"), "--out")
    space = jobs.space_for(target, args.include, args.exclude)
    gpus = jobs.parse_gpus(args.gpus) if args.gpus else None
    study = args.study or (jobs.shared_study_name(target) if gpus else None)
    storage = args.storage or (str(args.run_dir / STUDIES_FILE) if gpus else None)
    search = jobs.start_search(target, options, space=space, run_dir=args.run_dir, storage=storage,
                               study_name=study, resume=args.resume)
    defaults = space.default()
    _print_header(target, space, getattr(search.measurer, "log_dir", None))
    progress = TrialPrinter(defaults, args.trials, verbose=bool(getattr(args, "verbose", False)))
    progress.header()
    try:
        if gpus:  # one process per GPU measures; this one then confirms
            print(f"study {study}: {len(gpus)} search processes (GPUs {', '.join(gpus)}), logs in "
                  f"{args.run_dir}/gpu-N.log", file=sys.stderr)
            failed = jobs.run_on_gpus(search, gpus, run_dir=args.run_dir, resume=args.resume,
                                      include=args.include, exclude=args.exclude)
            if failed:
                print(f"warning: the processes of GPU(s) {', '.join(failed)} ended with an error; see their logs",
                      file=sys.stderr)
            result = search.run(0, on_trial=progress)
        else:
            result = search.run(options.trials, on_trial=progress, time_budget_s=options.time_budget_s)
    finally:
        jobs.close_measurer(search)
    tuned = jobs.finish(search, result)
    if args.json:
        print_json({"study": result.study_name, "stopped_by": result.stop_reason.value,
                    "duration_s": round(result.duration_s, 2),
                    "trials": [_record_json(r) for r in result.records],
                    "pruned": [_record_json(r) for r in result.pruned],
                    "confirmation": result.confirmation.to_dict() if result.confirmation else None,
                    "profile": tuned.profile.to_dict() if tuned.profile else None})
    if tuned.profile is None:
        raise NoFeasibleTrialError(jobs.no_feasible_message(result, tuned.log_dir))
    tuned.profile.save(out)
    if knobs.compiles(tuned.profile.settings) and not args.no_artifacts:
        from autotune.profiles.warmup import warmup

        print(f"building compile artifacts beside {out} (two fresh processes; skip with --no-artifacts)",
              file=sys.stderr)
        tuned.profile = warmup(out)
    if not args.json:
        print(summary(result, defaults, args.time_budget))
        print(f"profile written to {out}  (show it: autotune show {out})")
        fp = tuned.profile.fingerprint
        if fp.emulated:
            print(textwrap.fill(
                f"note: the {size(target.max_vram)} ceiling was emulated on a {fp.device_name} "
                f"({size(fp.total_memory_bytes)}) by capping PyTorch's share of it; allocation "
                "patterns differ on a real card of that size: confirm the profile there", WIDTH))
    return 0


def _print_header(target: Target, space: SearchSpace, log_dir: Path | None) -> None:
    err = sys.stderr
    print(f"target: {target.model} {target.width}x{target.height} batch {target.batch}, "
          f"{target.steps} steps, ceiling {size(target.max_vram)} ({target.max_vram} bytes) on {target.device}",
          file=err)
    print(textwrap.fill(f"space: {space.size()} valid combinations of {', '.join(space.searched_knobs)}",
                        WIDTH, subsequent_indent="  "), file=err)
    for status in space.statuses:
        if status.state == "excluded":
            print(_clip(f"  not searched: {status.knob}={status.value}: {status.reason}"), file=err)
    if log_dir is not None:
        print(f"trial logs: {log_dir}/", file=err)
    if target.device == "cpu":
        print("note: on CPU, memory is the peak of live tensors in RAM, not VRAM", file=err)


def _clip(text: str, width: int = WIDTH) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


class TrialPrinter:
    """One line per finished trial, as it finishes: number, outcome, latency and its precision,
    peak, the planner's prediction, the settings changed from the defaults. `-v` adds where
    the trial's time went."""

    COLUMNS = "{:>5}  {:<13} {:>9} {:>6} {:>10} {:>10} {:>6}  {}"

    def __init__(self, defaults: Assignment, total: int, verbose: bool = False) -> None:
        self.defaults, self.total, self.verbose = defaults, total, verbose

    def header(self) -> None:
        print(self.COLUMNS.format("trial", "outcome", "latency", "±", "peak", "predicted", "psnr", "settings"),
              file=sys.stderr)

    def __call__(self, record: TrialRecord, done: int, best: TrialRecord | None) -> None:
        m = record.measurement
        precision = m.timing.ci_rel_half_width if m.timing else None
        detail = m.error if record.outcome == "failed" else settings_diff(record.assignment, self.defaults)
        if record.outcome == "over_ram":
            detail = f"host RAM peak {size(m.memory.trial_rss_peak)}: {detail}"
        line = self.COLUMNS.format(
            record.number, record.outcome, seconds(m.latency_median_s),
            "-" if precision is None else f"{100 * precision:.1f}%", size(m.peak_bytes),
            size(record.prediction.total_bytes) if record.prediction else "-",
            f"{m.quality.psnr_db:.0f}" if m.quality and m.quality.psnr_db is not None else "-", detail)
        print(_clip(line), file=sys.stderr)
        if self.verbose:
            print(_clip("       " + phases_line(m), WIDTH), file=sys.stderr)
        sys.stderr.flush()


#: Phases in the order a trial goes through them, with their short names.
PHASES = (("spawn_s", "spawn"), ("import_s", "imports"), ("device_setup_s", "device setup"),
          ("load_weights_s", "weights"), ("build_s", "build"), ("apply_s", "apply"), ("to_device_s", "to device"),
          ("first_run_s", "first run"), ("timed_s", "timed"), ("memory_run_s", "memory run"),
          ("release_s", "release"), ("overhead_s", "overhead"))


def phases_line(m: Measurement) -> str:
    phases = m.phases.to_dict()
    parts = [f"{name} {phases[key]:.2f}" for key, name in PHASES if key in phases]
    runs = f" ({m.timing.runs} runs)" if m.timing else ""
    return "phases (s): " + ", ".join(parts) + runs


def summary(result: SearchResult, defaults: Assignment, budget: float | None) -> str:
    """The end of a search in a few lines of at most WIDTH columns."""
    lines = []
    best = result.best
    m = best.measurement
    precision = m.timing.ci_rel_half_width if m.timing else None
    plus = f" ±{100 * precision:.1f}%" if precision is not None else ""
    lines.append(_clip(f"winner     {settings_diff(best.assignment, defaults)}"))
    lines.append(f"           {seconds(m.latency_median_s)}{plus} median of {len(m.latencies_s)} runs, "
                 f"peak {size(m.peak_bytes)} ({m.peak_metric})")
    lines.extend(quality_lines(result, best))
    conf = result.confirmation
    if conf is not None and conf.runner_up is not None:
        runner = conf.candidate(conf.runner_up)
        verdict = "significant" if conf.significant else "not significant"
        lines.append(_clip(f"runner-up  {settings_diff(runner.settings if runner else {}, defaults)}"))
        lines.append(textwrap.fill(
            f"           {100 * (conf.margin or 0):+.1f}% vs the winner over {conf.rounds} interleaved rounds in "
            f"{conf.sessions} sessions (p={conf.p_value:.3f}, {verdict}); decided by {conf.decided_by}",
            WIDTH, subsequent_indent="           "))
    elif result.confirmation_skipped:
        lines.append(textwrap.fill(f"runner-up  not confirmed: {result.confirmation_skipped}", WIDTH,
                                   subsequent_indent="           "))
    if conf is not None and conf.speedup is not None:
        ci = f" (95% interval {conf.speedup_ci[0]:.2f}-{conf.speedup_ci[1]:.2f}x)" if conf.speedup_ci else ""
        lines.append(f"defaults   {conf.speedup:.2f}x the winner's latency, measured side by side{ci}")
    if result.alternatives:
        lines.append(f"alternatives  {len(result.alternatives)} faster-or-smaller trade-offs kept in the profile")
    over_ram = f"{result.count('over_ram')} over --max-ram, " if result.target.max_ram is not None else ""
    counts = (f"{result.count('feasible')} feasible, {result.count('over_ceiling')} over the ceiling, {over_ram}"
              f"{result.count('below_quality')} below the quality floor, "
              f"{result.count('oom')} out of memory, {result.count('failed')} failed")
    pruned = f"; {len(result.pruned)} pruned by the planner" if result.pruned else ""
    lines.append(textwrap.fill(f"measured   {len(result.records)} trials in {result.duration_s:.0f} s: {counts}{pruned}",
                               WIDTH, subsequent_indent="           "))
    lines.append(f"stopped by {result.stop_reason.describe(budget)}")
    if result.reused:
        lines.append(f"reused     {result.reused} trial(s) measured by earlier searches of this target "
                     "(--no-reuse measures again)")
    if result.interrupted:
        lines.append(f"note       {result.interrupted} trial(s) interrupted by an earlier stop were recorded as failed")
    return "\n".join(lines)


def _per_call(q: Any) -> str:
    """", denoiser 56.0 dB and VAE decode 80.1 dB SQNR per call" (what was measured of it)."""
    parts = [f"{what} {value:.1f} dB" for what, value in (("denoiser", q.denoiser_sqnr_db),
                                                          ("VAE decode", q.decode_sqnr_db)) if value is not None]
    return f", {' and '.join(parts)} SQNR per call" if parts else ""


def _floor(result: SearchResult, best: TrialRecord) -> str:
    """" (lossy floor 20 dB SQNR per call)": the floor these settings are judged on when lossy."""
    from autotune.measure.quality import applicable_floor
    from autotune.search.trials import judged_end_to_end

    q, guard = best.measurement.quality, result.guard
    if q is None:
        return ""
    if guard is None:  # an older study: its PSNR floor only
        return f" (lossy floor {result.min_psnr:g} dB PSNR)" if result.min_psnr else ""
    floor = applicable_floor(q, guard.min_psnr, guard.min_sqnr, judged_end_to_end(best.assignment))
    return f" (lossy floor {floor.floor_db:g} dB {floor.metric})" if floor else ""


def quality_lines(result: SearchResult, best: TrialRecord) -> list[str]:
    """The winner's quality and what it is against; trials the guard refused for more than the
    floor (a bug in an exact knob, a broken output, lossy and unjudged); a missing reference."""
    from autotune.search.trials import quality_against

    lines = []
    m = best.measurement
    q = m.quality
    floor = _floor(result, best)
    if q and q.psnr_db is not None:
        lines.append(textwrap.fill(
            f"quality    PSNR {q.psnr_db:.1f} dB, SSIM {q.ssim if q.ssim is not None else float('nan'):.4f}"
            + _per_call(q)
            + f"{floor} against {quality_against(result, best)}", WIDTH, subsequent_indent="           "))
    elif result.guard is not None:
        lines.append(_clip(f"quality    {quality_against(result, best)}"))
    guard = result.guard
    if guard is not None and guard.problem:
        unjudged = sum(1 for r in result.records if r.quality_issue and r.quality_issue.kind == "unjudged")
        lines.append(textwrap.fill(
            f"note       no quality reference: {guard.problem}; "
            + (f"{unjudged} lossy trial(s) were not judged and not accepted (--allow-unjudged accepts them)"
               if not guard.allow_unjudged else "lossy trials were accepted unjudged (--allow-unjudged)"),
            WIDTH, subsequent_indent="           "))
    for record in result.records:
        if record.quality_issue and record.quality_issue.kind != "unjudged":
            lines.append(textwrap.fill(f"refused    trial {record.number}: {record.quality_issue.message}", WIDTH,
                                       subsequent_indent="           "))
    return lines


def _record_json(record: TrialRecord) -> dict[str, Any]:
    """One trial of `search --json`: a JSON document of its own keys (settings, phases, predicted),
    assembled from the measurement's and the prediction's codecs."""
    m, stored = record.measurement, record.measurement.to_dict()
    return {"number": record.number, "outcome": record.outcome, "settings": record.assignment,
            "latency_median_s": m.latency_median_s, "latency_p90_s": m.latency_p90_s,
            "timing": stored["timing"], "peak_bytes": m.peak_bytes, "peak_metric": m.peak_metric,
            "memory": stored["memory"], "overhead_s": m.overhead_s, "phases": stored["timings"],
            "conditions": stored["conditions"], "quality": stored["quality"], "quality_issue": record.quality_issue.message if record.quality_issue else None,
            "predicted": record.prediction.to_dict() if record.prediction else None, "error": m.error,
            "log": m.log_path}
