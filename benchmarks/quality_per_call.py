#!/usr/bin/env python3
"""Per-call vs end-to-end quality of each knob value against the fp32 reference: the data behind
the exact settings' per-call floor (quality.EXACT_MIN_SQNR_DB).

For each number of steps, the reference (every knob at its exact default, fp32) is made once in
this process (denoiser calls kept: denoiser_calls.py), then every setting below is measured as a
search trial would be (autotune.measure.worker.measure, 1 timed run) and judged against it: end-to-end
PSNR/SSIM of the image, latent error, the lowest per-call denoiser SQNR and the VAE decode's
SQNR on the reference's latent.

Then the trajectory table: the exact settings again, and a controlled perturbation (one ulp per
element of the denoiser's output, on every call or on the first only: measure/perturb.py), with
the numbers uncapped (the guard's read 100 for anything above 100 dB, which hides float noise):
what sampling does to an error of known size, end to end, beside what it is per call. A sample
grid (the reference image of a few seeds at each number of steps) is written as a PNG.
    python benchmarks/quality_per_call.py [--model builtin:tiny-sd] [--steps 4 30] [--size 64]
        [--name quality-per-call]
    python benchmarks/quality_per_call.py --model builtin:tiny-sd-shapes --name quality-structured
Writes benchmarks/results/<date>-<name>-<device>.md, .json and .png.
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
    {"fuse_qkv": True},
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
                         "latent_rel_error": q.get("latent_rel_error"), "denoiser_sqnr_db": q.get("denoiser_sqnr_db"),
                         "decode_sqnr_db": q.get("decode_sqnr_db")})
            print(rows[-1], flush=True)
            write(rows)


#: The exact settings and perturbations of the trajectory table: label, settings, perturbed calls
#: (None: not perturbed, 0: every call, n: the first n).
TRAJECTORY: list[tuple[str, dict[str, Any], int | None]] = [
    ("defaults", {}, None),
    ("channels_last=True", {"channels_last": True}, None),
    ("attention=sliced", {"attention": "sliced"}, None),
    ("fuse_qkv=True", {"fuse_qkv": True}, None),
    ("1 ulp per element, every call", {}, 0),
    ("1 ulp per element, first call only", {}, 1),
]
SAMPLE_SEEDS = (0, 1, 2, 3, 4, 5)


def _run(pipe: Any, target: Target, keep: bool, seed: int = 0) -> tuple[Any, Any, Any]:
    """One call of the pipeline: images, final latents, and its denoiser calls."""
    from autotune.measure import denoiser_calls
    from autotune.models.call import call_pipeline, output_array

    latents: list[Any] = []
    with denoiser_calls.recording(pipe, keep=keep, steps=target.steps) as recorder:
        images = output_array(call_pipeline(pipe, target, seed, capture_latents=latents))
    return images, latents[0].float().cpu().numpy(), recorder


def _perturbing(pipe: Any, calls: int | None) -> Any:
    import contextlib

    from autotune.measure import perturb

    if calls is None:
        return contextlib.nullcontext()
    return perturb.perturbed_denoiser(pipe, seed=0, calls=calls or None)


def trajectory(model: str, size: int, steps: int, device: str, rows: list[dict[str, Any]], write: Any) -> Any:
    """The trajectory table's rows at `steps` (uncapped: inf is identical); returns the reference
    images of SAMPLE_SEEDS for the sample grid."""
    import math

    from autotune.knobs.settings import apply_settings
    from autotune.measure import denoiser_calls, quality
    from autotune.models.pipelines import build_pipeline

    target = Target(model=model, height=size, width=size, batch=1, steps=steps, max_vram=NO_CEILING, device=device)
    pipe = build_pipeline(model)
    apply_settings(pipe, {}, device=device)
    ref_images, ref_latents, recorder = _run(pipe, target, keep=True)
    reference = recorder.reference_arrays()
    samples = [ref_images] + [_run(pipe, target, keep=False, seed=s)[0] for s in SAMPLE_SEEDS[1:]]
    for label, changed, calls in TRAJECTORY:
        pipe = build_pipeline(model)
        apply_settings(pipe, changed, device=device)
        with _perturbing(pipe, calls):
            images, latents, trial = _run(pipe, target, keep=False)
        with _perturbing(pipe, calls):  # the same perturbation on the replayed calls
            per_call = denoiser_calls.replay_sqnr(pipe, trial, reference, cap=math.inf)
        rows.append({"settings": label, "steps": steps,
                     "psnr_db": _finite(quality.psnr(images, ref_images, cap=math.inf)),
                     "latent_rel_error": float(f"{quality.relative_error(latents, ref_latents):.3g}"),
                     "denoiser_sqnr_db": _finite(per_call)})
        print(rows[-1], flush=True)
        write()
    return samples


def _finite(value: float | None) -> float | str | None:
    """JSON keeps no infinity: identical outputs read "identical"."""
    if value is None:
        return None
    return "identical" if value == float("inf") else round(value, 2)


def write_samples(path: Path, samples: dict[int, Any]) -> None:
    """One row of reference images per number of steps, each image at twice its size."""
    import numpy as np
    from PIL import Image

    rows = [np.concatenate([np.asarray(s)[0] for s in images], axis=1) for images in samples.values()]
    grid = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny-sd")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 30])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default="quality-per-call", help="the results files' name after the date")
    args = parser.parse_args()
    import os

    device_name = (f"CPU, {hardware.cpu_name()}, {os.cpu_count()} cores" if args.device == "cpu"
                   else (hardware.probe_gpus() or [None])[0].name)
    stamp = dt.date.today().isoformat()
    slug = "cpu" if args.device == "cpu" else device_name.lower().replace(" ", "-")
    out = Path(__file__).parent / "results" / f"{stamp}-{args.name}-{slug}"
    meta = {"device": device_name, "model": args.model, "size": args.size, "reference": "fp32, every knob at its default"}

    rows: list[dict[str, Any]] = []
    paths: list[dict[str, Any]] = []

    def write(_rows: Any = None) -> None:  # after every row: a cut-short run keeps what it measured
        atomic_write_text(out.with_suffix(".json"), json.dumps({**meta, "rows": rows, "trajectory": paths}, indent=2))
        lines = [f"# Per-call vs end-to-end quality, {args.model} {args.size}x{args.size}, on {device_name}", "",
                 "Against the fp32 reference (every knob at its exact default); one run per setting. "
                 "`denoiser SQNR`: the lowest over the first, middle and last denoiser call, fed the "
                 "reference's inputs; `VAE decode SQNR`: the reference's own latent decoded by the "
                 "trial's VAE (100 = identical). Written by `benchmarks/quality_per_call.py "
                 f"--model {args.model} --name {args.name} --steps {' '.join(map(str, args.steps))} --size {args.size}`.", "",
                 "| steps | settings | PSNR dB | SSIM | latent rel. error | denoiser SQNR dB | VAE decode SQNR dB |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['steps']} | {r['settings']} | {r['psnr_db']} | {r['ssim']} | {r['latent_rel_error']} | "
                  f"{r['denoiser_sqnr_db']} | {r.get('decode_sqnr_db')} |" for r in rows]
        if paths:
            lines += ["", "## Trajectory: float noise end to end and per call, uncapped", "",
                      "The exact settings, and one ulp per element added to the denoiser's output "
                      "(`autotune/measure/perturb.py`: on every call, or on the first call only), in "
                      "fp32 against the same fp32 reference, with PSNR and SQNR not capped at 100 "
                      "(`identical`: bit for bit). The per-call SQNR replays the reference's kept "
                      "calls through the trial's denoiser, perturbed as in its run.", "",
                      "| steps | setting | end-to-end PSNR dB | latent rel. error | denoiser SQNR dB |",
                      "|---|---|---|---|---|"]
            lines += [f"| {r['steps']} | {r['settings']} | {r['psnr_db']} | {r['latent_rel_error']} | "
                      f"{r['denoiser_sqnr_db']} |" for r in paths]
        atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")

    samples: dict[int, Any] = {}
    for steps in args.steps:
        samples[steps] = trajectory(args.model, args.size, steps, args.device, paths, write)
    write_samples(out.with_suffix(".png"), samples)
    for steps in args.steps:
        measure(args.model, args.size, steps, args.device, rows, write)
    print(f"wrote {out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
