#!/usr/bin/env python3
"""How close the planner's predicted peaks are to measured ones: |predicted - measured| / measured.

CPU, measured live (the tracker on real runs of builtin:tiny-sd; target: within 5%):
    python benchmarks/planner_accuracy.py
GPU, against a committed GPU run (predictions are computed here, on any machine; the measured
allocated / reserved / NVML process peaks come from the run's raw JSON):
    python benchmarks/planner_accuracy.py --from-results benchmarks/results/2026-11-26-nvidia-h200.json
GPU, measured live on a CUDA machine (SD1.5 batch 4 and SDXL 1024x1024, each case in a fresh
process, writes after every case so a cut-short run keeps what it measured):
    python benchmarks/planner_accuracy.py --device cuda --budget-s 300
Writes benchmarks/results/<date>-planner-accuracy-<device>.md and .json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autotune import hardware  # noqa: E402
from autotune.measure import worker as _worker
from autotune.cli.format import settings_diff  # noqa: E402
from autotune.measure.backends.cpu import CpuBackend  # noqa: E402
from autotune.knobs import Context, all_knobs  # noqa: E402
from autotune.measure.measurer import TrialJob  # noqa: E402
from autotune.models.pipelines import model_info  # noqa: E402
from autotune.planner import Planner  # noqa: E402
from autotune.profiles.profile import atomic_write_text  # noqa: E402
from autotune.knobs.space import SearchSpace  # noqa: E402
from autotune.target import Target  # noqa: E402
from autotune.units import format_size  # noqa: E402

DEFAULTS = {k.name: k.default for k in all_knobs()}
RESULTS = Path(__file__).parent / "results"


def _diff(a: dict[str, Any]) -> str:
    return settings_diff(a, DEFAULTS)


def _err(pred: int, meas: int | None) -> float | None:
    return None if not meas else (pred - meas) / meas


def _bound(row: dict[str, Any]) -> str:
    if row.get("status", "ok") != "ok":
        return f"{row['status']}: {row.get('error_message') or ''}"[:120]
    return "yes" if row["lower_bound_below_measured"] else "NO"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def cpu_rows(sample: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = []
    for batch, size in ((1, 128), (2, 128), (1, 256)):
        target = Target(model="builtin:tiny-sd", height=size, width=size, batch=batch, steps=2,
                        max_vram=2**40, device="cpu")
        planner = Planner(target)
        space = list(SearchSpace(Context("cpu", model_info(target.model).components)))
        for a in random.Random(seed).sample(space, min(sample, len(space))):
            prediction = planner.predict(a)
            measured = _worker.measure(TrialJob(target, a, warmup=0, runs=1), backend=CpuBackend())
            rows.append({"target": f"{size}x{size} b{batch}", "settings": a, "predicted": prediction.to_dict(),
                         "measured": {"cpu_live_tensor_peak": measured.peak_bytes},
                         "error": _err(prediction.total_bytes, measured.peak_bytes)})
    return rows, {"device": "cpu", "device_name": hardware.cpu_name(), "source": "measured live in this run"}


def _compare_gpu(p: Any, mem: dict[str, int]) -> dict[str, Any]:
    """Each layer of a GPU prediction against torch's and NVML's counters."""
    allocated = p.total_bytes - p.allocator_bytes - p.runtime_bytes
    return {
        "predicted": p.to_dict(),
        "measured": {k: mem.get(k) for k in ("cuda_max_allocated", "cuda_max_reserved", "nvml_process_peak")},
        "error": _err(p.total_bytes, mem.get("nvml_process_peak")),
        "error_allocated": _err(allocated, mem.get("cuda_max_allocated")),
        "error_reserved": _err(allocated + p.allocator_bytes, mem.get("cuda_max_reserved")),
        "lower_bound_below_measured": p.lower_bound_bytes <= (mem.get("nvml_process_peak") or 0),
    }


def gpu_rows(results: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    raw = json.loads(results.read_text())
    meta = raw["meta"]
    planners: dict[int, Planner] = {}
    rows = []
    cases = [("ladder", r["label"], r.get("assignment"), r.get("measurement"), None) for r in raw["ladder"]]
    for search in raw["searches"]:
        cases += [(f"search {search['ceiling']}", f"trial {r['number']}", r["assignment"], r["measurement"],
                   search["ceiling_bytes"]) for r in search["records"]]
    for where, label, assignment, measurement, ceiling in cases:
        if not assignment or not measurement or measurement["status"] != "ok":
            continue
        full = {**DEFAULTS, **assignment}
        target = Target(model=meta["model"], height=meta["height"], width=meta["width"], batch=meta["batch"],
                        steps=meta["steps"], max_vram=ceiling or 2**50, device="cuda")
        p = planners.setdefault(target.batch, Planner(target)).predict(full)
        rows.append({"where": where, "label": label, "settings": full, "ceiling": ceiling,
                     **_compare_gpu(p, measurement["memory"])})
    best_checks = []
    for search in raw["searches"]:
        ok = [r for r in search["records"] if r["outcome"] == "feasible"]
        if not ok:
            continue
        best = min(ok, key=lambda r: statistics.median(r["measurement"]["latencies_s"]))
        target = Target(model=meta["model"], height=meta["height"], width=meta["width"], batch=meta["batch"],
                        steps=meta["steps"], max_vram=search["ceiling_bytes"], device="cuda")
        p = Planner(target).predict({**DEFAULTS, **best["assignment"]})
        best_checks.append({"ceiling": search["ceiling"], "settings": best["assignment"],
                            "predicted_fits": p.total_bytes <= target.max_vram,
                            "would_be_pruned": p.surely_over(target.max_vram, 0.05)})
    info = {"device": "cuda", "device_name": meta["device_name"], "source": f"measured in {results.name}",
            "best_checks": best_checks}
    return rows, info


#: Held-out GPU cases: shapes and settings the calibration never saw (batch 4, SDXL, its fp32 VAE).
CUDA_CASES = [
    ("builtin:sd15", 512, 4, {"dtype": "fp16"}),
    ("builtin:sd15", 512, 4, {"dtype": "fp16", "vae_slicing": True}),
    ("builtin:sd15", 512, 4, {"dtype": "fp16", "offload": "model", "channels_last": True}),
    ("builtin:sdxl", 1024, 1, {"dtype": "fp16"}),
    ("builtin:sdxl", 1024, 1, {"dtype": "fp16", "offload": "model"}),
    ("builtin:sdxl", 1024, 1, {"dtype": "bf16"}),  # bf16 last: a second SDXL build (one per dtype)
    ("builtin:sdxl", 1024, 1, {"dtype": "bf16", "offload": "model", "vae_tiling": True, "layerwise_fp8": True}),
]


def cuda_live_rows(budget_s: float, out_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from autotune.measure.measurer import SubprocessMeasurer

    start = time.monotonic()
    measurer = SubprocessMeasurer(timeout_s=180)
    gpu = hardware.require_gpu()
    info = {"device": "cuda", "device_name": gpu.name, "source": "measured live in this run (4 steps, 1 timed run)",
            "best_checks": [], "held_out": True}
    rows: list[dict[str, Any]] = []
    planners: dict[tuple, Planner] = {}
    for model, size, batch, settings in CUDA_CASES:
        if time.monotonic() - start > budget_s:
            info.setdefault("skipped", []).append(f"{model} b{batch} {_diff({**DEFAULTS, **settings})}")
            continue
        target = Target(model=model, height=size, width=size, batch=batch, steps=4, max_vram=2**50, device="cuda")
        full = {**DEFAULTS, **settings}
        p = planners.setdefault((model, batch), Planner(target)).predict(full)
        m = measurer(TrialJob(target, full, warmup=1, runs=1))
        rows.append({"where": f"{model} {size}px b{batch}", "label": "", "settings": full,
                     "status": m.status, "error_message": m.error, "timings": m.phases.to_dict(),
                     "latencies_s": m.latencies_s, **_compare_gpu(p, m.memory.to_dict() if m.status == "ok" else {})})
        write(rows, info, time.monotonic() - start, out_dir)
    return rows, info


def write(rows: list[dict[str, Any]], info: dict[str, Any], elapsed: float, out_dir: Path) -> Path:
    errors = [abs(r["error"]) for r in rows if r["error"] is not None]
    summary = {"rows": len(rows), "median_abs_error": statistics.median(errors) if errors else None,
               "max_abs_error": max(errors) if errors else None, "seconds": round(elapsed, 1)}
    date = dt.date.today().isoformat()
    slug = "cpu" if info["device"] == "cpu" else info["device_name"].lower().replace(" ", "-")
    if info.get("held_out"):
        slug += "-heldout"
    path = out_dir / f"{date}-planner-accuracy-{slug}.md"
    lines = [f"# Planner accuracy on {info['device_name']} ({info['device']})", "",
             f"- date {date}; predictions computed on {hardware.cpu_name()} with autotune "
             f"{hardware.versions()['autotune']}, torch {hardware.versions()['torch']}; measurements: {info['source']}",
             f"- {summary['rows']} rows; median |error| {_pct(summary['median_abs_error'])}, "
             f"max |error| {_pct(summary['max_abs_error'])}; planning + measuring took {elapsed:.0f} s",
             f"- command: `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`", ""]
    if info["device"] == "cpu":
        lines += ["Metric: peak bytes of live tensors on the CPU (`cpu_live_tensor_peak`), predicted from "
                  "fake-tensor traces vs counted on real runs. RAM, not VRAM.", "",
                  "| target | settings | predicted | measured | error | peak during |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['target']} | {_diff(r['settings'])} | {format_size(r['predicted']['total_bytes'])} | "
                         f"{format_size(r['measured']['cpu_live_tensor_peak'])} | {_pct(r['error'])} | "
                         f"{r['predicted']['peak_phase']} |")
    else:
        sample_note = ("These cases were not used to fit the calibration constants "
                       "(autotune/planner/calibration.py): a held-out test." if info.get("held_out") else
                       "The calibration constants (autotune/planner/calibration.py) were fitted on these same "
                       "rows: this is in-sample, not a held-out test.")
        lines += ["`error` compares the predicted NVML process peak (the number a search checks the ceiling "
                  "against) with the measured one; the `allocated` and `reserved` columns compare each layer "
                  "of the prediction with torch's counters. " + sample_note, "",
                  "| run | settings | predicted | measured process | error | allocated err | reserved err | "
                  "lower bound <= measured |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['where']} {r['label']} | {_diff(r['settings'])} | "
                         f"{format_size(r['predicted']['total_bytes'])} | "
                         f"{format_size(r['measured']['nvml_process_peak'])} | {_pct(r['error'])} | "
                         f"{_pct(r['error_allocated'])} | {_pct(r['error_reserved'])} | "
                         f"{_bound(r)} |")
        for skipped in info.get("skipped", []):
            lines.append(f"| skipped (time budget) | {skipped} | | | | | | |")
        if info["best_checks"]:
            lines += ["", "Measured optimum of each search, as the planner sees it:", ""]
        for c in info["best_checks"]:
            lines.append(f"- under {c['ceiling']}: {_diff(c['settings'])}: predicted to fit: "
                         f"{'yes' if c['predicted_fits'] else 'NO'}; would be pruned: "
                         f"{'YES' if c['would_be_pruned'] else 'no'}")
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_text(path.with_suffix(".json"), json.dumps(
        {"info": info, "summary": summary, "rows": rows}, indent=1, default=str))
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from-results", type=Path, help="a gpu_check JSON to compare against (GPU mode)")
    p.add_argument("--device", default="cpu", help="cpu (live, tiny-sd) or cuda (live, sd15 + sdxl)")
    p.add_argument("--budget-s", type=float, default=300.0, help="cuda mode: start no case after this")
    p.add_argument("--sample", type=int, default=16, help="CPU mode: assignments per target (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args()
    start = time.monotonic()
    if args.from_results:
        rows, info = gpu_rows(args.from_results)
    elif args.device == "cuda":
        rows, info = cuda_live_rows(args.budget_s, args.out_dir)
    else:
        rows, info = cpu_rows(args.sample, args.seed)
    path = write(rows, info, time.monotonic() - start, args.out_dir)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
