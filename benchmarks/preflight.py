#!/usr/bin/env python3
"""The GPU session's preflight: what every later measurement of a loan needs, checked in under a
minute, so a broken machine costs seconds of the loan instead of all of it.

1. imports: torch, diffusers, optuna, autotune; the versions, the device and the driver;
2. one denoising step of --model through the real trial path (a worker process, the weights
   built or read from the weight cache, one step on the device); this also fills the weight
   cache that the session's later steps read;
3. one tiny torch.compile on the device, with a cold inductor cache (the compiler tool chain);
4. NVML by PID (CUDA only): the parent sampled the worker's memory by the worker's PID (the
   trial's `nvml_process_peak`), and NVML lists this process under its own PID. Recorded, not
   fatal: in a container's PID namespace no PID matches and the peaks come from the fallback;
   the latencies a loan is spent on are still worth having.
Checks 2 and 3 run side by side (the step runs in its own worker process). Each check prints one
line; a "## Preflight" section is appended to --report. Exit status 1 at the first fatal failure.

    python benchmarks/preflight.py --device cuda --model builtin:sd15 --report session.md
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NO_CEILING = 2**50  # the step runs uncapped: nothing is emulated


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float
    fatal: bool = True

    def line(self) -> str:
        verdict = "ok" if self.ok else ("FAILED" if self.fatal else "WARNING")
        return f"- {self.name}: **{verdict}** ({self.seconds:.1f} s) {self.detail}"


def check_imports(device: str) -> tuple[Check, Any]:
    start = time.monotonic()
    import diffusers  # noqa: F401
    import optuna  # noqa: F401
    import torch  # noqa: F401

    from autotune import hardware

    fp = hardware.fingerprint(device)
    v = fp.versions
    detail = (f"{fp.device_name}, driver {fp.driver or '-'}; torch {v['torch']}, diffusers "
              f"{v['diffusers']}, optuna {v['optuna']}, transformers {v['transformers']}, python {v['python']}")
    return Check("imports", True, detail, time.monotonic() - start), fp


def model_step(model: str, device: str, height: int | None, width: int | None, timeout_s: float,
               log_dir: Path) -> Any:
    """One trial of one step: the Measurement (status, memory, timings)."""
    from autotune.measure.measurer import SubprocessMeasurer, TrialJob
    from autotune.models.pipelines import model_info
    from autotune.target import Target

    info = model_info(model)
    target = Target(model=model, height=height or info.native_height, width=width or info.native_width,
                    batch=1, steps=1, max_vram=NO_CEILING, device=device, pipeline_class=info.pipeline_class)
    dtype = "fp16" if device == "cuda" else "fp32"
    with SubprocessMeasurer(timeout_s=timeout_s, log_dir=log_dir) as measure:
        return measure(TrialJob(target, {"dtype": dtype}, warmup=1, runs=1, max_runs=1, time_cap_s=1.0))


def tiny_compile(device: str) -> Check:
    start = time.monotonic()
    import torch

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) * 2 + x.square()

    x = torch.randn(256, device=device)
    got = torch.compile(f)(x)
    if device == "cuda":
        torch.cuda.synchronize()
    error = (got - f(x)).abs().max().item()
    return Check("tiny compile", error < 1e-4, f"inductor, cold cache; max abs diff to eager {error:.1e}",
                 time.monotonic() - start)


def nvml_by_pid(step: Any) -> Check:
    """Whether the parent saw the worker's memory by PID, and NVML lists this process's PID."""
    start = time.monotonic()
    from autotune import hardware
    from autotune.units import format_size

    worker_peak = step.memory.nvml_process_peak if step is not None else None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = hardware.nvml_handle_for_cuda0(pynvml)
            pids = [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
        finally:
            pynvml.nvmlShutdown()
    except ImportError as exc:
        return Check("NVML by PID", False, f"pynvml missing: {exc}", time.monotonic() - start, fatal=False)
    except pynvml.NVMLError as exc:
        return Check("NVML by PID", False, f"NVML error: {exc}", time.monotonic() - start, fatal=False)
    own = os.getpid() in pids
    ok = own and bool(worker_peak)
    detail = (f"worker's peak by PID {format_size(worker_peak) if worker_peak else 'none'} "
              f"(peak metric {getattr(step, 'peak_metric', '-')}); this process (PID {os.getpid()}) "
              f"{'listed' if own else 'NOT listed'} among NVML's PIDs {pids}"
              + ("" if ok else "; a PID namespace? the session goes on, its peaks come from the fallback"))
    return Check("NVML by PID", ok, detail, time.monotonic() - start, fatal=False)


def step_check(step: Any, seconds: float, model: str) -> Check:
    if step.status != "ok":
        return Check(f"one {model} step", False, f"{step.status}: {step.error} (log {step.log_path})", seconds)
    t = step.phases.to_dict()
    phases = ", ".join(f"{k} {t[k]:.1f} s" for k in ("spawn_s", "load_weights_s", "build_s", "first_run_s") if k in t)
    return Check(f"one {model} step", True, f"{step.device_name}: {phases}; peak {step.peak_bytes} B "
                 f"({step.peak_metric})", seconds)


def run(args: argparse.Namespace) -> list[Check]:
    """The checks in order; stops at the first fatal failure."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="preflight-inductor-"))
    checks: list[Check] = []

    def done(check: Check) -> bool:
        checks.append(check)
        print(check.line(), flush=True)
        return check.ok or not check.fatal

    try:
        imports, _ = check_imports(args.device)
    except ImportError as exc:
        done(Check("imports", False, str(exc), 0.0))
        return checks
    if not done(imports):
        return checks
    from autotune.errors import AutotuneError
    from autotune.models.pipelines import model_info

    start = time.monotonic()
    try:
        model_info(args.model)  # a model that cannot be found fails here, in a second
    except AutotuneError as exc:
        done(Check(f"one {args.model} step", False, str(exc), time.monotonic() - start))
        return checks
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(model_step, args.model, args.device, args.height, args.width, args.timeout,
                              args.log_dir)
        try:
            compiled = tiny_compile(args.device)
        except (RuntimeError, OSError, ImportError) as exc:  # inductor's errors are RuntimeErrors
            compiled = Check("tiny compile", False, f"{type(exc).__name__}: {exc}", time.monotonic() - start)
        try:
            step = pending.result()
            stepped = step_check(step, time.monotonic() - start, args.model)
        except AutotuneError as exc:
            step, stepped = None, Check(f"one {args.model} step", False, str(exc), time.monotonic() - start)
    if not done(stepped) or not done(compiled):
        return checks
    if args.device == "cuda":
        done(nvml_by_pid(step))
    return checks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--model", default="builtin:sd15")
    p.add_argument("--height", type=int, help="default: the model's native size")
    p.add_argument("--width", type=int)
    p.add_argument("--timeout", type=float, default=50.0, help="seconds for the model step (default: 50)")
    p.add_argument("--report", type=Path, help="markdown file to append the results to")
    p.add_argument("--log-dir", type=Path, default=Path(tempfile.gettempdir()) / "preflight-logs")
    args = p.parse_args(argv)
    start = time.monotonic()
    checks = run(args)
    passed = all(c.ok or not c.fatal for c in checks) and len(checks) >= 3
    summary = f"preflight {'passed' if passed else 'FAILED'} in {time.monotonic() - start:.0f} s"
    print(summary, flush=True)
    if args.report:
        with args.report.open("a") as handle:
            handle.write("\n## Preflight\n\n" + "\n".join(c.line() for c in checks) + f"\n\n{summary}\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
