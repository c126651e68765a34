#!/usr/bin/env python3
"""The planner's host-RAM prediction against the resident set a real process grows by.

Two measurements per (model, dtype), each in a fresh process so nothing earlier is in its RSS:
  load   the pipeline loaded as a production process loads it (`build_pipeline`: diffusers'
         `from_pretrained` of the built-in's cached folder), then every tensor cloned: model
         offload's first round trip to the device and back leaves each weight in fresh host
         memory (right after `from_pretrained` the tensors still map the file, untouched, and
         the RSS hardly grows). Compared with the planner's `host_bytes` for offload=model on a
         CUDA target.
  trial  two identical search trials on this CPU in one worker (pristine copy, deep copy, run):
         the second's resident-set peak less the pristine copy (what --max-ram judges) less the
         worker's RSS before the first. Compared with `host_bytes` for the CPU target (weights
         and activations live in RAM).
On a CUDA machine the offload modes themselves could be measured; this script needs no GPU.

    python benchmarks/host_ram.py [--model builtin:sd15] [--dtypes fp32 fp16] [--size 256] [--name host-ram]
Writes benchmarks/results/<date>-<name>-cpu.md and .json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _load_child(model: str, dtype: str) -> dict[str, Any]:
    """In a fresh process, its libraries imported first: RSS before loading the pipeline, after
    it, and after every weight made a round trip as model offload makes them (moved to the
    device and back: fresh host memory), emulated on CPU by cloning each tensor."""
    import gc
    import os

    import diffusers  # noqa: F401  (imported before the baseline: not the pipeline's memory)
    import torch
    import transformers  # noqa: F401

    from autotune.knobs.builtin.dtype import torch_dtype
    from autotune.measure.backends.host_memory import HostPeak, resident_bytes
    from autotune.measure.weights import weight_bytes
    from autotune.models.pipelines import build_pipeline

    gc.collect()
    before = resident_bytes(os.getpid())
    with HostPeak(os.getpid()) as peak:
        pipe = build_pipeline(model, torch_dtype=torch_dtype(dtype))
        loaded = resident_bytes(os.getpid())
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                for tensor in (*module.parameters(), *module.buffers()):
                    tensor.data = tensor.data.clone()
        gc.collect()
    after = resident_bytes(os.getpid())
    return {"rss_before": before, "rss_loaded": loaded, "rss_peak": peak.peak, "rss_after_round_trip": after,
            "weight_bytes": weight_bytes(pipe)}


def _trial_child(model: str, dtype: str, size: int) -> dict[str, Any]:
    """The same trial twice through the measurer, as a search runs trials: the first builds the
    worker's pristine copy; the second's RSS peak less that copy (what --max-ram judges) is
    compared with the worker's RSS before the first loaded anything (its imports done). The
    second's own start is no baseline: the allocator keeps most of what the first trial freed."""
    from autotune.knobs import all_knobs
    from autotune.measure.measurer import SubprocessMeasurer, TrialJob
    from autotune.target import NO_CEILING, Target

    target = Target(model=model, height=size, width=size, batch=1, steps=2, max_vram=NO_CEILING, device="cpu")
    assignment = {**{k.name: k.default for k in all_knobs()}, "dtype": dtype}
    with SubprocessMeasurer() as measurer:
        first = measurer(TrialJob(target, assignment, runs=1, max_runs=1))
        m = measurer(TrialJob(target, assignment, runs=1, max_runs=1))
    memory = m.memory
    return {"status": m.status, "rss_peak": memory.host_rss_peak, "rss_before": memory.host_rss_before,
            "rss_before_first": first.memory.host_rss_before,
            "pristine_bytes": memory.host_pristine_bytes, "trial_rss_peak": memory.trial_rss_peak,
            "cpu_live_tensor_peak": memory.cpu_live_tensor_peak}


def _predict(model: str, dtype: str, size: int, device: str, offload: str) -> int | None:
    from autotune.knobs import all_knobs
    from autotune.planner import Planner
    from autotune.target import NO_CEILING, Target

    target = Target(model=model, height=size, width=size, batch=1, steps=2, max_vram=NO_CEILING, device=device)
    assignment = {**{k.name: k.default for k in all_knobs()}, "dtype": dtype, "offload": offload}
    return Planner(target).predict(assignment).host_bytes


def _in_child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _error(predicted: int | None, measured: int | None) -> float | None:
    return None if predicted is None or not measured else round(100 * (predicted - measured) / measured, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin:sd15")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "fp16"])
    parser.add_argument("--size", type=int, default=256, help="image size of the trial (default: 256)")
    parser.add_argument("--name", default="host-ram")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, model, dtype, *rest = args.child
        result = _load_child(model, dtype) if kind == "load" else _trial_child(model, dtype, int(rest[0]))
        print(json.dumps(result))
        return 0

    from autotune import hardware
    from autotune.profiles.profile import atomic_write_text

    device = hardware.cpu_name()
    _in_child("load", args.model, args.dtypes[0])  # fills the built-in's cache: the loads below read it
    rows = []
    for dtype in args.dtypes:
        load = _in_child("load", args.model, dtype)
        trial = _in_child("trial", args.model, dtype, str(args.size))
        predicted_model = _predict(args.model, dtype, args.size, "cuda", "model")
        predicted_cpu = _predict(args.model, dtype, args.size, "cpu", "none")
        load_growth = load["rss_after_round_trip"] - load["rss_before"]
        trial_growth = trial["trial_rss_peak"] - trial["rss_before_first"]
        rows.append({"dtype": dtype, "load": load, "trial": trial, "predicted_offload_model": predicted_model,
                     "predicted_cpu": predicted_cpu, "load_rss_growth": load_growth,
                     "load_error_pct": _error(predicted_model, load_growth), "trial_rss_growth": trial_growth,
                     "trial_error_pct": _error(predicted_cpu, trial_growth)})
        print(json.dumps(rows[-1]), flush=True)
    stamp = dt.date.today().isoformat()
    out = Path(__file__).parent / "results" / f"{stamp}-{args.name}-cpu"
    meta = {"device": device, "model": args.model, "size": args.size, "rows": rows}
    atomic_write_text(out.with_suffix(".json"), json.dumps(meta, indent=2))
    mib = 2 ** 20
    lines = [f"# Host RAM: the planner's prediction against measured RSS growth, {args.model}, on {device}", "",
             f"Written by `benchmarks/host_ram.py --model {args.model} --size {args.size}`. Each process fresh, "
             "its libraries imported before the baseline; VmRSS read from /proc. `load`: the pipeline loaded "
             "by `build_pipeline` (diffusers' `from_pretrained` of the built-in's cached safetensors folder), "
             "then every tensor cloned, as model offload's first round trip to the device and back leaves "
             "it in fresh host memory: RSS after that less RSS before, against the planner's host RAM for "
             "offload=model on a CUDA target (`loaded`: RSS right after `from_pretrained`, whose tensors "
             "still map the file, untouched). `trial`: the second of two identical CPU trials in one worker "
             f"({args.size}x{args.size}, 2 steps): its RSS peak less the worker's pristine copy (what --max-ram "
             "judges) less the worker's RSS before the first trial (imports done, nothing loaded), against the "
             "planner's host RAM on the CPU target (its own start is no baseline: the allocator keeps most "
             "of what the first trial freed).", "",
             "| dtype | weights MiB | loaded MiB | load RSS growth MiB | predicted (offload=model) MiB | error | "
             "trial RSS growth MiB | predicted (cpu) MiB | error |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def m(v: int | None) -> str:
            return "-" if v is None else f"{v / mib:.0f}"
        loaded = r["load"]["rss_loaded"] - r["load"]["rss_before"]
        lines.append(f"| {r['dtype']} | {m(r['load']['weight_bytes'])} | {m(loaded)} | {m(r['load_rss_growth'])} | "
                     f"{m(r['predicted_offload_model'])} | {r['load_error_pct']}% | {m(r['trial_rss_growth'])} | "
                     f"{m(r['predicted_cpu'])} | {r['trial_error_pct']}% |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {out}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
