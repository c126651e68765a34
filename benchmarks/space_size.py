#!/usr/bin/env python3
"""How large is the space a search faces for the models people struggle with, and how much of it
does the planner rule out before anything runs?

For each model in `benchmarks/configs/` (the config.json files of FLUX.1-dev and Wan 2.1 T2V
1.3B / 14B as diffusers publishes them: configs only, no weights), at its usual size, on a CUDA
target: the candidates of the default space, the planner's prediction for every one of them (its
wall time on this machine), and per consumer ceiling the candidates the search's planner gate
prunes (`Prediction.surely_over`: the lower bound over the ceiling by more than the prune
margin), those left to sample from, and those predicted to fit; then the same with a host-RAM
ceiling (`surely_over_ram`). Nothing runs on a GPU: a search's wall time on one is not measured
here.

    python benchmarks/space_size.py                      # ~5 minutes on 2 cores
    python benchmarks/space_size.py --models flux.1-dev --ceilings 16GB
Writes benchmarks/results/<date>-space-size-cpu.md and .json.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autotune import hardware  # noqa: E402
from autotune.cli.format import settings_diff, size  # noqa: E402
from autotune.jobs import space_for  # noqa: E402
from autotune.planner import Planner  # noqa: E402
from autotune.planner.calibration import DEFAULT_PRUNE_MARGIN  # noqa: E402
from autotune.profiles.profile import atomic_write_text  # noqa: E402
from autotune.target import Target  # noqa: E402
from autotune.units import parse_size  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Model:
    folder: str
    height: int
    width: int
    frames: int | None = None
    note: str = ""


#: Each at the size its model card generates at (Wan 2.1: 1.3B at 480p, 14B at 720p; 81 frames).
MODELS = {m.folder: m for m in (
    Model("flux.1-dev", 1024, 1024, note="FluxPipeline, 1024x1024"),
    Model("wan2.1-t2v-1.3b", 480, 832, 81, note="WanPipeline, 832x480, 81 frames"),
    Model("wan2.1-t2v-14b", 720, 1280, 81, note="WanPipeline, 1280x720, 81 frames"),
)}
CEILINGS = ("8GB", "12GB", "16GB", "24GB")
RAM_CEILINGS = ("32GB", "64GB")


def measure(model: Model, ceilings: list[int], ram_ceilings: list[int]) -> dict[str, Any]:
    """Every candidate's prediction for `model`, and what each ceiling leaves of the space."""
    target = Target(model=str(CONFIGS / model.folder), height=model.height, width=model.width, batch=1,
                    steps=20, max_vram=max(ceilings), device="cuda", frames=model.frames)
    space = space_for(target)
    start = time.perf_counter()
    planner = Planner(target)
    rows = [(a, planner.predict(a)) for a in space]
    plan_s = time.perf_counter() - start
    defaults = space.default()
    out: dict[str, Any] = {"model": model.folder, "what": model.note, "candidates": len(rows),
                           "knobs": space.searched_knobs, "plan_s": round(plan_s, 1), "ceilings": []}
    for ceiling in ceilings:
        kept = [(a, p) for a, p in rows if not p.surely_over(ceiling, DEFAULT_PRUNE_MARGIN)]
        fits = [(a, p) for a, p in kept if p.total_bytes <= ceiling]
        row: dict[str, Any] = {"max_vram": ceiling, "pruned": len(rows) - len(kept), "left": len(kept),
                               "predicted_to_fit": len(fits), "max_ram": {}}
        for ram in ram_ceilings:
            also = [(a, p) for a, p in kept if not p.surely_over_ram(ram, DEFAULT_PRUNE_MARGIN)]
            row["max_ram"][str(ram)] = len(also)
        if fits:
            lightest = min(fits, key=lambda r: (r[1].host_bytes or 0, r[1].total_bytes))
            row["least_host_ram_fitting"] = {"settings": settings_diff(lightest[0], defaults),
                                             "host_bytes": lightest[1].host_bytes,
                                             "predicted_bytes": lightest[1].total_bytes}
        out["ceilings"].append(row)
    smallest = min(rows, key=lambda r: r[1].total_bytes)
    out["smallest"] = {"settings": settings_diff(smallest[0], defaults), "predicted_bytes": smallest[1].total_bytes}
    return out


def report(results: list[dict[str, Any]], ram_ceilings: list[int]) -> str:
    ram_heads = " | ".join(f"left with --max-ram {size(r)}" for r in ram_ceilings)
    lines = [
        "# The space a search faces: FLUX.1-dev and Wan 2.1 at consumer ceilings (planner only)",
        "",
        f"- produced by `benchmarks/space_size.py` on {hardware.cpu_name()}, {os.cpu_count()} cores, "
        f"{dt.date.today().isoformat()}: a **CUDA target planned on a CPU machine** (fake tensors, no weights, "
        "nothing runs). No number here was measured on a GPU.",
        "- models: the config.json files in `benchmarks/configs/` (as published on the Hub); knobs: the "
        "default space on CUDA (`autotune plan` / `autotune search` without --include/--exclude).",
        f"- pruned: the planner gate's rule (lower bound over the ceiling by more than {DEFAULT_PRUNE_MARGIN:.0%}); "
        "left: what the sampler can still propose; predicted to fit: the full prediction under the ceiling.",
        "",
    ]
    for r in results:
        lines += [f"## {r['model']} ({r['what']})", "",
                  f"{r['candidates']} candidates over {', '.join(r['knobs'])}; every one predicted in "
                  f"{r['plan_s']} s.", "",
                  f"| --max-vram | pruned | left | predicted to fit | {ram_heads} | fits with the least host RAM |",
                  "|---|---|---|---|" + "---|" * len(ram_ceilings) + "---|"]
        for c in r["ceilings"]:
            light = c.get("least_host_ram_fitting")
            light_text = (f"{light['settings']} ({size(light['host_bytes'] or 0)} RAM, "
                          f"{size(light['predicted_bytes'])} predicted)" if light else "nothing")
            rams = " | ".join(str(c["max_ram"][str(ram)]) for ram in ram_ceilings)
            lines.append(f"| {size(c['max_vram'])} | {c['pruned']} | {c['left']} | {c['predicted_to_fit']} | "
                         f"{rams} | {light_text} |")
        lines += ["", f"Smallest predicted peak: {size(r['smallest']['predicted_bytes'])} "
                  f"({r['smallest']['settings']}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--ceilings", nargs="*", default=list(CEILINGS))
    parser.add_argument("--ram-ceilings", nargs="*", default=list(RAM_CEILINGS))
    parser.add_argument("--name", default="space-size")
    args = parser.parse_args(argv)
    ceilings = [parse_size(c) for c in args.ceilings]
    rams = [parse_size(c) for c in args.ram_ceilings]
    results = []
    for name in args.models:
        print(f"planning {name}...", file=sys.stderr)
        results.append(measure(MODELS[name], ceilings, rams))
        print(f"  {results[-1]['candidates']} candidates in {results[-1]['plan_s']} s", file=sys.stderr)
    stem = RESULTS / f"{dt.date.today().isoformat()}-{args.name}-cpu"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(results, indent=2) + "\n")
    atomic_write_text(stem.with_suffix(".md"), report(results, rams) + "\n")
    print(stem.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
