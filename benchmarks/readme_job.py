#!/usr/bin/env python3
"""What the README's main job costs, beside the import it is measured against, N times over.

Each run, in a fresh working folder (so a fresh `.autotune/` run dir): `python -c 'import torch,
diffusers'` in a fresh process (wall time), then the README's search exactly as the README gives
it, then the import again. It prints and writes (.md
and .json, rewritten after every run): the search's wall time, its ratio to the mean of the two
imports beside it, the median `overhead_s` per trial (from the profile), the winner and its
latency, whether it was confirmed, and the load average before and after, since a shared
machine's load is the first suspect of a slow or disagreeing run. The exact stdout and stderr
of every search are kept beside the results (`<stem>-run-N.log`).

    python benchmarks/readme_job.py --runs 3       # CPU: ~2 min a run on 2 cores, more with a confirmation

The job's targets (issue 20): at most 15x the import, a median overhead of at most 1 s, and
identical searches naming the same winner with latencies within 5%.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune import hardware  # noqa: E402
from autotune.cli.format import settings_diff  # noqa: E402
from autotune.knobs import all_knobs  # noqa: E402
from autotune.profiles.profile import atomic_write_text  # noqa: E402

#: The README's main job, exactly as the README gives it; each run is in a fresh working folder,
#: so its run dir (`.autotune/`) and profile are new and its output is the README's transcript.
JOB = ("search", "--max-vram", "2GB", "--trials", "8", "--out", "profiles/example-cpu.yaml")
IMPORT = "import torch, diffusers"
#: Issue 20's targets for this job.
MAX_RATIO = 15.0
MAX_OVERHEAD_S = 1.0
MAX_WINNER_SPREAD = 0.05


def timed_import() -> float:
    """Wall time of a fresh Python importing torch and diffusers."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", IMPORT], check=True, capture_output=True)
    return time.monotonic() - start


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if dirty else "")


def one_run(index: int, work: Path, log_path: Path, extra: list[str]) -> dict[str, Any]:
    """The import, the README's search in fresh directories, the import again."""
    load_before = os.getloadavg()[0]
    import_before = timed_import()
    folder = work / f"run-{index}"
    (folder / "profiles").mkdir(parents=True)
    out = folder / JOB[JOB.index("--out") + 1]
    command = [sys.executable, "-m", "autotune.cli.main", *JOB, *extra]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.monotonic() - start
    import_after = timed_import()
    log_path.write_text(f"$ autotune {' '.join(JOB + tuple(extra))}\n--- stderr ---\n{done.stderr}--- stdout ---\n{done.stdout}")
    row: dict[str, Any] = {"run": index, "exit_code": done.returncode, "wall_s": round(wall, 1),
                           "import_before_s": round(import_before, 2), "import_after_s": round(import_after, 2),
                           "load_1m_before": round(load_before, 2), "load_1m_after": round(os.getloadavg()[0], 2),
                           "log": log_path.name,
                           "target": next((line.removeprefix("target: ") for line in done.stderr.splitlines()
                                           if line.startswith("target: ")), None)}
    imports = (import_before + import_after) / 2
    row["ratio_to_import"] = round(wall / imports, 1)
    if done.returncode != 0 or not out.exists():
        row["error"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no profile written"
        return row
    profile = yaml.safe_load(out.read_text())
    search, confirmation = profile.get("search") or {}, profile.get("confirmation") or {}
    defaults = {k.name: k.default for k in all_knobs()}
    row.update({"median_overhead_s": search.get("median_overhead_s"),
                "winner": settings_diff(profile["settings"], defaults),
                "winner_latency_s": profile["measurements"]["latency_median_s"],
                "confirmed": bool(confirmation), "stopped_by": search.get("stopped_by")})
    return row


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The three targets, over the runs that finished."""
    ok = [r for r in rows if "winner" in r]
    latencies = [r["winner_latency_s"] for r in ok]
    spread = (max(latencies) - min(latencies)) / min(latencies) if latencies else None
    return {"max_ratio_to_import": max((r["ratio_to_import"] for r in rows), default=None),
            "ratio_met": all(r["ratio_to_import"] <= MAX_RATIO for r in rows),
            "max_median_overhead_s": max((r["median_overhead_s"] or 0.0 for r in ok), default=None),
            "overhead_met": all((r["median_overhead_s"] or 0.0) <= MAX_OVERHEAD_S for r in ok),
            "winners": sorted({r["winner"] for r in ok}), "winner_latency_spread": spread,
            "same_winner_met": len({r["winner"] for r in ok}) == 1 and spread is not None
            and spread <= MAX_WINNER_SPREAD}


def markdown(report: dict[str, Any]) -> str:
    v = report["verdict"]
    targets = sorted({r["target"] for r in report["rows"] if r.get("target")})
    lines = [f"# The README's main job on {report['device']}, {report['date']}", "",
             f"`autotune {' '.join(JOB)}` ({'; '.join(targets) or 'no target line printed'}), "
             f"{len(report['rows'])} runs in fresh run directories, each between two fresh-process "
             "`import torch, diffusers`.", "",
             f"- device: {report['device']} ({report['cores']} cores), shared with other engineers' jobs: "
             "see the load average per run", f"- commit: {report['commit']}",
             f"- torch {report['torch']}, diffusers {report['diffusers']}, Python {report['python']}",
             f"- command: `python benchmarks/readme_job.py --runs {len(report['rows'])}`", "",
             "| run | wall | imports (before/after) | ratio | median overhead | winner | latency | confirmed | load 1m (before/after) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['run']} | {r['wall_s']} s | {r['import_before_s']} / {r['import_after_s']} s | "
                     f"{r['ratio_to_import']}x | {r.get('median_overhead_s', '-')} s | {r.get('winner', r.get('error'))} | "
                     f"{r.get('winner_latency_s', '-')} s | {r.get('confirmed', '-')} | "
                     f"{r['load_1m_before']} / {r['load_1m_after']} |")
    spread = v["winner_latency_spread"]
    lines += ["", "Targets (issue 20):",
              f"- at most {MAX_RATIO:g}x the import: worst {v['max_ratio_to_import']}x, "
              f"{'met' if v['ratio_met'] else 'NOT met'}",
              f"- median overhead at most {MAX_OVERHEAD_S:g} s: worst {v['max_median_overhead_s']} s, "
              f"{'met' if v['overhead_met'] else 'NOT met'}",
              f"- the same winner, latencies within {100 * MAX_WINNER_SPREAD:g}%: {', '.join(v['winners'])}, "
              f"spread {'-' if spread is None else f'{100 * spread:.1f}%'}, "
              f"{'met' if v['same_winner_met'] else 'NOT met'}", "",
              "Each search's exact output is in the `-run-N.log` files beside this one."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--stem", default=None, help="results file name without suffix (default: DATE-readme-job-cpu)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more search flags, after everything else")
    args = p.parse_args(argv)
    import diffusers
    import torch

    stem = args.stem or f"{dt.date.today().isoformat()}-readme-job-cpu"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"date": dt.date.today().isoformat(), "device": hardware.cpu_name(),
                              "cores": os.cpu_count(), "commit": git_commit(), "torch": torch.__version__,
                              "diffusers": diffusers.__version__, "python": sys.version.split()[0], "rows": []}
    with tempfile.TemporaryDirectory(prefix="readme-job-") as tmp:
        for i in range(args.runs):
            row = one_run(i, Path(tmp), args.out_dir / f"{stem}-run-{i}.log", args.extra)
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
            report["verdict"] = verdict(report["rows"])
            atomic_write_text(args.out_dir / f"{stem}.json", json.dumps(report, indent=1) + "\n")
            atomic_write_text(args.out_dir / f"{stem}.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
