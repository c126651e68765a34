"""One trial in one fresh process: build -> apply -> warm up -> timed runs -> peak memory.

Run as `python -m autotune._worker JOB.json RESULT.json`. It catches only the device's
out-of-memory error (a measured outcome); any other exception ends the process with a traceback,
which the parent records as that trial's FAIL with the reason.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from autotune.errors import InvalidTargetError
from autotune.measure import EXIT_TARGET_UNRUNNABLE, Measurement, TrialJob

log = logging.getLogger("autotune.worker")


def run_pipeline(pipe: Any, job: TrialJob) -> Any:
    import torch

    target = job.target
    generator = torch.Generator("cpu").manual_seed(job.seed)
    return pipe(
        prompt=target.prompt, height=target.height, width=target.width,
        num_images_per_prompt=target.batch, num_inference_steps=target.steps,
        generator=generator, output_type="np",
    )


def _timed_runs(pipe: Any, job: TrialJob, backend: Any, result: Measurement) -> None:
    for _ in range(job.runs):
        start = time.perf_counter()
        run_pipeline(pipe, job)
        backend.synchronize()
        result.latencies_s.append(time.perf_counter() - start)


def measure(job: TrialJob, backend: Any = None) -> Measurement:
    from autotune.apply import apply_settings
    from autotune.backends import get_backend
    from autotune.knobs.builtin import torch_dtype
    from autotune.pipelines import build_pipeline

    backend = backend or get_backend(job.target.device, job.target.max_vram)
    backend.setup()
    result = Measurement(status="ok", backend=backend.name, device_name=backend.device_name(),
                         peak_metric=backend.peak_metric, device_info=dict(backend.info))
    start = time.perf_counter()
    try:
        pipe = build_pipeline(job.target.model, torch_dtype=torch_dtype(job.assignment.get("dtype", "fp32")))
        apply_settings(pipe, job.assignment, device=job.target.device)
        backend.prepare(pipe)
        result.timings["load_s"] = time.perf_counter() - start
        for i in range(job.warmup):
            t0 = time.perf_counter()
            run_pipeline(pipe, job)
            backend.synchronize()
            # The first run holds compile and autotuning time: reported, never mixed into latency.
            result.timings["first_run_s" if i == 0 else f"warmup_{i}_s"] = time.perf_counter() - t0
        if backend.track_timed_runs:
            with backend.track(pipe) as reading:
                _timed_runs(pipe, job, backend, result)
        else:
            _timed_runs(pipe, job, backend, result)
            with backend.track(pipe) as reading:
                run_pipeline(pipe, job)
                backend.synchronize()
        result.peak_bytes = reading.peak_bytes
        result.memory = dict(reading.memory)
        median = result.latency_median_s
        if job.assignment.get("compile", "none") != "none" and median is not None and "first_run_s" in result.timings:
            result.timings["compile_s"] = max(0.0, result.timings["first_run_s"] - median)
    except BaseException as exc:
        if not backend.is_oom(exc):
            raise
        result.status = "oom"
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        result.memory = backend.oom_details(exc)
        result.latencies_s = []
    return result


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = TrialJob.from_dict(json.loads(job_path.read_text()))
    log.info("trial %s on %s", job.assignment, job.target.device)
    try:
        result = measure(job)
    except InvalidTargetError as exc:  # no trial of this target can run here: say so once
        log.error("%s", exc)
        result_path.write_text(json.dumps({"unrunnable": str(exc)}))
        return EXIT_TARGET_UNRUNNABLE
    result_path.write_text(json.dumps(result.to_dict()))
    log.info("done: %s", result.status)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
