#!/usr/bin/env python3
"""The GPU check: the seed ladder and two searches under ceilings, on one card, as a results file.

On a CUDA machine (defaults: builtin:sd15, 512x512, batch 1, 20 steps):
    python benchmarks/gpu_check.py
As a CPU smoke test of the same code path (CI runs this):
    python benchmarks/gpu_check.py --device cpu --model builtin:tiny-sd --smoke

(a) the seed ladder fp32 -> fp16 -> +channels_last -> +compile -> +memory-efficient attention,
    uncapped, with latency and the three peaks (one measurer: its warm worker measures the next
    step unless the last one left state behind, e.g. a compile);
(b) `autotune search` at each --ceilings value, and the hand choice for that ceiling measured
    first, inside the same share of the budget (the search gets what the hand choice left), in
    the same warm worker the search then uses; the profile / hand-choice latency ratio;
(c) writes <out-dir>/<date>-<device>[-<tag>].md (tables) and .json (every raw measurement),
    rewritten after each phase so a run cut short still leaves its results. A global --budget-s
    keeps the whole run inside a lent GPU's time: later phases get what is left.
`--no-ladder` or `--ceilings` with no value runs one part only (benchmarks/gpu_session.sh splits
them over two loans). Exit status 1 when the preflight fails, 2 when a ladder step or a hand
choice failed to measure (crash or timeout; the report says which), else 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autotune import hardware  # noqa: E402
from autotune.cli.format import settings_diff  # noqa: E402
from autotune import knobs  # noqa: E402
from autotune.knobs import Context, all_knobs  # noqa: E402
from autotune.knobs.probe import model_context  # noqa: E402
from autotune.measure.measurer import Measurement, SubprocessMeasurer, TrialJob  # noqa: E402
from autotune.models.pipelines import model_info  # noqa: E402
from autotune.profiles.profile import atomic_write_text  # noqa: E402
from autotune.target import Target  # noqa: E402
from autotune.jobs import TuneResult, tune  # noqa: E402
from autotune.units import format_size, parse_size  # noqa: E402

log = logging.getLogger("gpu_check")
NO_CEILING = 2**50  # ladder rows run uncapped: the ceiling is then native, never emulated
DEFAULTS = {k.name: k.default for k in all_knobs()}


def ladder(device: str, ctx: Context) -> list[tuple[str, dict[str, Any] | None, str]]:
    """(label, assignment or None when skipped, note)."""
    rows: list[tuple[str, dict[str, Any] | None, str]] = [
        ("fp32", {"dtype": "fp32"}, ""),
        ("fp16", {"dtype": "fp16"}, ""),
        ("+channels_last", {"dtype": "fp16", "channels_last": True}, ""),
    ]
    compiled = {"dtype": "fp16", "channels_last": True, "compile": "full"}
    if device == "cpu":
        rows.append(("+compile", None, "skipped on cpu: a cold compile takes about a minute"))
    else:
        rows.append(("+compile", compiled, ""))
    reason = knobs.get("attention").reason_unavailable("xformers", ctx)
    if reason:
        rows.append(("+xformers attention", None,
                     f"skipped: {reason}. Every row already uses PyTorch SDPA, whose flash and "
                     "memory-efficient kernels are the memory-efficient attention"))
    else:
        base = compiled if device != "cpu" else {"dtype": "fp16", "channels_last": True}
        rows.append(("+xformers attention", {**base, "attention": "xformers"}, ""))
    return rows


def hand_choice(target: Target, device: str) -> dict[str, Any]:
    """What a user would pick from the docs for this ceiling: fp16 with SDPA, plus model offload
    when the fp16 weights x1.5 do not fit (on CPU, where nothing offloads, fp32)."""
    if device != "cuda":
        return {"dtype": "fp32"}
    from autotune.planner import Planner

    weights = Planner(target).predict({"dtype": "fp16"}).resident_weights_bytes
    return {"dtype": "fp16", **({"offload": "model"} if weights * 1.5 > target.max_vram else {})}


def preflight(measurer: SubprocessMeasurer, report: Report, md_path: Path) -> bool:
    """One tiny trial on the device first: a broken CUDA path costs seconds, not the whole loan."""
    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=NO_CEILING,
                    device="cuda", pipeline_class="StableDiffusionPipeline")
    result = measurer(TrialJob(target, {"dtype": "fp16"}, warmup=1, runs=1))
    report.meta["preflight"] = result.to_dict()
    if result.status != "ok":
        report.notes.append(f"preflight on builtin:tiny-sd failed, nothing else ran: {result.error}")
        report.write(md_path)
        return False
    return True


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclasses.dataclass
class Report:
    meta: dict[str, Any]
    ladder: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    searches: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def write(self, md_path: Path) -> None:
        atomic_write_text(md_path.with_suffix(".json"), json.dumps(dataclasses.asdict(self), indent=1, default=str))
        atomic_write_text(md_path, self.markdown(md_path.with_suffix(".json").name))

    def markdown(self, json_name: str) -> str:
        m = self.meta
        lines = [
            f"# GPU check: {m['model']} {m['width']}x{m['height']}, batch {m['batch']}, {m['steps']} steps",
            "",
            f"- device: **{m['device_name']}** ({m['device']}), {format_size(m.get('device_total_bytes'))}, "
            f"driver {m.get('driver')}",
            f"- date: {m['date']}; versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
            f"- command: `{m['command']}`",
            f"- wall time: {m.get('wall_s', 0):.0f} s of a {m['budget_s']:.0f} s budget",
            f"- raw measurements: [{json_name}]({json_name})",
            "",
            "Memory columns: `allocated` = torch max_memory_allocated, `reserved` = max_memory_reserved, "
            "`process` = NVML process peak (CUDA context included) sampled during the runs. On CPU the only "
            "memory number is the peak of live tensors in RAM (`cpu_live_tensor_peak`): not VRAM.",
        ]
        if self.ladder:
            lines += [
                "", "## Seed ladder", "",
                "| step | settings | latency median | p90 | first run (incl. compile) | peak (metric) | allocated | reserved | process | note |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
        for row in self.ladder:
            mm = row.get("measurement") or {}
            mem = mm.get("memory", {})
            lines.append(
                f"| {row['label']} | {_settings(row.get('assignment'))} | {_s(_median(mm))} | {_s(_p90(mm))} | "
                f"{_s(mm.get('timings', {}).get('first_run_s'))} | "
                f"{format_size(mm.get('peak_bytes'))} ({mm.get('peak_metric', '-')}) | "
                f"{format_size(mem.get('cuda_max_allocated'))} | "
                f"{format_size(mem.get('cuda_max_reserved'))} | {format_size(mem.get('nvml_process_peak'))} | "
                f"{row.get('note') or mm.get('error') or ''} |")
        for search in self.searches:
            lines += ["", f"## Search under {search['ceiling']} ({search['ceiling_bytes']} bytes)", "",
                      f"{search['summary']}", "",
                      "| trial | outcome | latency median | peak (metric) | predicted | allocated | reserved | process | settings |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for rec in search["records"]:
                mm, mem = rec["measurement"], rec["measurement"].get("memory", {})
                lines.append(
                    f"| {rec['number']} | {rec['outcome']} | {_s(_median(mm))} | "
                    f"{format_size(mm.get('peak_bytes'))} ({mm.get('peak_metric')}) | "
                    f"{format_size((rec.get('prediction') or {}).get('total_bytes'))} | "
                    f"{format_size(mem.get('cuda_max_allocated'))} | {format_size(mem.get('cuda_max_reserved'))} | "
                    f"{format_size(mem.get('nvml_process_peak'))} | {mm.get('error') or _settings(rec['assignment'])} |")
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _median(m: dict[str, Any]) -> float | None:
    return Measurement.from_dict(m).latency_median_s if m else None


def _p90(m: dict[str, Any]) -> float | None:
    return Measurement.from_dict(m).latency_p90_s if m else None


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _settings(assignment: dict[str, Any] | None) -> str:
    return settings_diff(assignment, DEFAULTS) if assignment else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="builtin:sd15")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--ceilings", nargs="*", default=["4GB", "8GB"], help="one search each; none: no search")
    p.add_argument("--no-ladder", action="store_true", help="skip the seed ladder")
    p.add_argument("--no-preflight", action="store_true",
                   help="skip the tiny-sd CUDA preflight (gpu_session.sh runs its own first)")
    p.add_argument("--tag", help="added to the results file names, e.g. part1")
    p.add_argument("--trials", type=int, default=12, help="trials per search (a budget may stop it sooner)")
    p.add_argument("--runs", type=int, default=6, help="fewest timed runs per trial (default: 6)")
    p.add_argument("--max-runs", type=int, default=100, help="most timed runs per trial (default: 100)")
    p.add_argument("--max-run-time", type=float, default=10.0, help="seconds of timed runs per trial (default: 10)")
    p.add_argument("--trial-timeout", type=float, default=90.0, help="seconds before a search trial counts as hung")
    p.add_argument("--ladder-timeout", type=float, default=240.0,
                   help="seconds per ladder step (a cold full compile of the SD1.5 UNet takes minutes)")
    p.add_argument("--budget-s", type=float, default=360.0,
                   help="whole-run time budget in seconds; no new trial starts after it (default fits an "
                        "8-minute GPU loan with start-up)")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--run-dir", type=Path, help="studies and trial logs (default: a temp dir)")
    p.add_argument("--exclude", action="append", default=[], help="passed to the searches, e.g. compile=full")
    p.add_argument("--include", action="append", default=[], help="passed to the searches, e.g. quantize_bnb")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for a CPU smoke test: 64 px, 2 steps, 2 trials")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.smoke:
        args.height, args.width, args.steps, args.trials, args.runs, args.max_runs = 64, 64, 2, 2, 1, 1
    start = time.monotonic()
    info = model_info(args.model)
    height, width = args.height or info.native_height, args.width or info.native_width
    fp = hardware.fingerprint(args.device)
    device_name = fp.device_name
    date = dt.date.today().isoformat()
    tag = "".join(f"-{slug(t)}" for t in (args.smoke and "smoke", args.tag) if t)
    md_path = args.out_dir / f"{date}-{slug(device_name)}{tag}.md"
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    report = Report(meta={
        "model": args.model, "height": height, "width": width, "batch": args.batch, "steps": args.steps,
        "device": args.device, "device_name": device_name, "device_total_bytes": fp.total_memory_bytes,
        "driver": fp.driver, "compute_capability": fp.compute_capability,
        "versions": fp.versions, "date": date, "budget_s": args.budget_s,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    })
    measurer = SubprocessMeasurer(timeout_s=args.ladder_timeout, log_dir=run_dir / "ladder-logs")
    ctx = model_context(args.model, args.device, info)

    def remaining() -> float:
        return args.budget_s - (time.monotonic() - start)

    if args.device == "cuda" and not args.no_preflight and not preflight(measurer, report, md_path):
        return 1
    failures: list[str] = []

    # (a) the ladder, in one measurer (a fresh process where a step leaves state behind), uncapped
    for label, assignment, note in ([] if args.no_ladder else ladder(args.device, ctx)):
        row: dict[str, Any] = {"label": label, "assignment": assignment, "note": note}
        if assignment is not None and remaining() < 30:
            row["note"] = "skipped: time budget spent"
        elif assignment is not None:
            target = Target(model=args.model, height=height, width=width, batch=args.batch, steps=args.steps,
                            max_vram=NO_CEILING, device=args.device, pipeline_class=info.pipeline_class)
            log.info("ladder %s: %s", label, assignment)
            measured = measurer(TrialJob(target, assignment, warmup=1, runs=args.runs, max_runs=args.max_runs,
                                         time_cap_s=args.max_run_time), timeout_s=remaining())
            row["measurement"] = measured.to_dict()
            if measured.status == "failed" and (measured.error or "").startswith("stopped at the time budget"):
                row["note"] = "stopped: time budget spent"
            elif measured.status == "failed":
                failures.append(f"ladder {label}: {measured.error}")
            report.meta.update({"driver": measured.device_info.driver} if measured.device_info.driver else {})
        report.ladder.append(row)
        report.meta["wall_s"] = time.monotonic() - start
        report.write(md_path)

    measurer.close()

    # (b) one search per ceiling, sharing what is left of the budget; the hand choice first, in it
    for i, ceiling in enumerate(args.ceilings):
        share = remaining() / (len(args.ceilings) - i)
        if share < 30:
            report.notes.append(f"search under {ceiling} skipped: time budget spent")
            continue
        share_start = time.monotonic()
        target = Target(model=args.model, height=height, width=width, batch=args.batch, steps=args.steps,
                        max_vram=parse_size(ceiling), device=args.device, pipeline_class=info.pipeline_class)
        # One measurer for the hand choice and the search: its warm worker measures both.
        search_measurer = SubprocessMeasurer(
            timeout_s=args.trial_timeout, log_dir=run_dir / f"logs-{slug(ceiling)}",
            env=None if "TORCHINDUCTOR_CACHE_DIR" in os.environ else
            {"TORCHINDUCTOR_CACHE_DIR": str((run_dir / "inductor-cache").resolve())})
        hand = hand_choice(target, args.device)
        log.info("hand choice under %s: %s", ceiling, hand)
        hand_measured = search_measurer(TrialJob(target, hand, warmup=1, runs=args.runs, max_runs=args.max_runs,
                                                 time_cap_s=args.max_run_time), timeout_s=share)
        if hand_measured.status == "failed":
            failures.append(f"hand choice under {ceiling}: {hand_measured.error}")
        hand_wall = time.monotonic() - share_start
        search_budget = max(0.0, share - hand_wall)
        log.info("search under %s: %d trials, %.0f s", ceiling, args.trials, search_budget)
        result: TuneResult = tune(target, trials=args.trials, run_dir=run_dir, seed=0, exclude=args.exclude, include=args.include,
                                  measurer=search_measurer, runs=args.runs, time_cap_s=args.max_run_time,
                                  confirm=not args.smoke, time_budget_s=search_budget)
        s = result.search
        share_wall = time.monotonic() - share_start
        summary = (f"Share of the budget: {share:.0f} s; hand choice {hand_wall:.0f} s, then the search "
                   f"{s.duration_s:.0f} s of its {search_budget:.0f} s budget "
                   f"({100 * s.duration_s / max(search_budget, 1e-9):.0f}%); together {share_wall:.0f} s "
                   f"({100 * share_wall / share:.0f}% of the share). "
                   f"{len(s.records)} trials measured: {s.count('feasible')} feasible, "
                   f"{s.count('over_ceiling')} over the ceiling, {s.count('oom')} out of memory, "
                   f"{s.count('failed')} failed; {len(s.pruned)} not measured (planner: over the ceiling).")
        if result.profile:
            best = result.profile.best
            summary += (f" Best: {_settings(best.settings)}, {_s(best.latency_median_s)}, "
                        f"{format_size(best.peak_bytes)} ({best.peak_metric}); ceiling "
                        f"{result.profile.fingerprint.ceiling_mode or 'n/a'}.")
            result.profile.save(md_path.with_name(f"{md_path.stem}-{slug(ceiling)}.yaml"))
        else:
            summary += " No feasible trial: no profile."
        ratio = None
        if result.profile and hand_measured.latency_median_s:
            ratio = result.profile.best.latency_median_s / hand_measured.latency_median_s
            summary += (f" Hand choice ({_settings(hand)}): {_s(hand_measured.latency_median_s)}, "
                        f"{format_size(hand_measured.peak_bytes)}; profile / hand = {ratio:.3f}.")
        report.searches.append({
            "ceiling": ceiling, "ceiling_bytes": target.max_vram, "summary": summary,
            "wall_s": s.duration_s, "budget_s": search_budget, "stopped_by": s.stop_reason,
            "share_s": share, "share_wall_s": share_wall, "hand_wall_s": hand_wall,
            "hand_choice": {"assignment": hand, "measurement": hand_measured.to_dict()},
            "profile_over_hand": ratio,
            "confirmation": s.confirmation.to_dict() if s.confirmation else None,
            "study": s.study_name, "records": [
                {"number": r.number, "outcome": r.outcome, "assignment": r.assignment,
                 "measurement": r.measurement.to_dict(),
                 "prediction": r.prediction.to_dict() if r.prediction else None} for r in s.records],
            "pruned": [{"number": r.number, "assignment": r.assignment,
                        "prediction": r.prediction.to_dict() if r.prediction else None} for r in s.pruned],
        })
        report.meta["wall_s"] = time.monotonic() - start
        report.write(md_path)

    report.notes += [f"failed to measure: {f}" for f in failures]
    report.meta["wall_s"] = time.monotonic() - start
    report.write(md_path)
    print(f"wrote {md_path} and {md_path.with_suffix('.json').name} in {report.meta['wall_s']:.0f} s")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
