#!/usr/bin/env python3
"""Per-call vs end-to-end quality of each knob value against the fp32 reference: the data behind
the exact settings' per-call floor (quality.EXACT_MIN_SQNR_DB).

For each number of steps, the reference (every knob at its exact default, fp32) is made once in
this process (denoiser calls kept: denoiser_calls.py), then every setting below is measured as a
search trial would be (autotune.measure.worker.measure, 1 timed run) and judged against it: end-to-end
PSNR/SSIM of the image, latent error, and the lowest per-call denoiser SQNR.
    python benchmarks/quality_per_call.py [--model builtin:tiny-sd] [--steps 4 30] [--size 64]
Writes benchmarks/results/<date>-quality-per-call-<device>.md and .json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autotune import hardware  # noqa: E402
from autotune.measure import worker as _worker
from autotune.knobs import all_knobs  # noqa: E402
from autotune.measure.measurer import TrialJob  # noqa: E402
from autotune.profiles.profile import atomic_write_text  # noqa: E402
from autotune.target import NO_CEILING, Target  # noqa: E402

DEFAULTS = {k.name: k.default for k in all_knobs()}
SETTINGS: list[dict[str, Any]] = [
    {},  # the defaults again: determinism
    {"channels_last": True},
    {"attention": "sliced"},
    {"vae_slicing": True},
    {"vae_tiling": True},
    {"dtype": "bf16"},
    {"layerwise_fp8": True},
    {"dtype": "bf16", "layerwise_fp8": True},
    {"dtype": "fp16"},  # last: emulated on CPU, ten times slower
]


def measure(model: str, size: int, steps: int, device: str, rows: list[dict[str, Any]],
            write: Any) -> None:
    """Measure every setting at `steps`, appending to `rows` and writing after each."""
    target = Target(model=model, height=size, width=size, batch=1, steps=steps, max_vram=NO_CEILING, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        ref = str(Path(tmp) / "ref.npz")
        _worker.measure(TrialJob(target, DEFAULTS, runs=1, max_runs=1, save_reference=ref))
        for changed in SETTINGS:
            job = TrialJob(target, {**DEFAULTS, **changed}, runs=1, max_runs=1, reference=ref)
            m = _worker.measure(job)
            q = m.quality.to_dict() if m.quality else {}
            rows.append({"settings": " ".join(f"{k}={v}" for k, v in changed.items()) or "defaults",
                         "steps": steps, "status": m.status, "psnr_db": q.get("psnr_db"), "ssim": q.get("ssim"),
                         "latent_rel_error": q.get("latent_rel_error"), "denoiser_sqnr_db": q.get("denoiser_sqnr_db")})
            print(rows[-1], flush=True)
            write(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny-sd")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 30])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import os

    device_name = (f"CPU, {hardware.cpu_name()}, {os.cpu_count()} cores" if args.device == "cpu"
                   else (hardware.probe_gpus() or [None])[0].name)
    stamp = dt.date.today().isoformat()
    slug = "cpu" if args.device == "cpu" else device_name.lower().replace(" ", "-")
    out = Path(__file__).parent / "results" / f"{stamp}-quality-per-call-{slug}"
    meta = {"device": device_name, "model": args.model, "size": args.size, "reference": "fp32, every knob at its default"}

    def write(rows: list[dict[str, Any]]) -> None:  # after every row: a cut-short run keeps what it measured
        atomic_write_text(out.with_suffix(".json"), json.dumps({**meta, "rows": rows}, indent=2))
        lines = [f"# Per-call vs end-to-end quality, {args.model} {args.size}x{args.size}, on {device_name}", "",
                 "Against the fp32 reference (every knob at its exact default); one run per setting. "
                 "`denoiser SQNR`: the lowest over the first, middle and last denoiser call, fed the "
                 "reference's inputs (100 = identical). Written by `benchmarks/quality_per_call.py "
                 f"--steps {' '.join(map(str, args.steps))} --size {args.size}`.", "",
                 "| steps | settings | PSNR dB | SSIM | latent rel. error | denoiser SQNR dB |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['steps']} | {r['settings']} | {r['psnr_db']} | {r['ssim']} | {r['latent_rel_error']} | "
                  f"{r['denoiser_sqnr_db']} |" for r in rows]
        atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")

    rows: list[dict[str, Any]] = []
    for steps in args.steps:
        measure(args.model, args.size, steps, args.device, rows, write)
    print(f"wrote {out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
