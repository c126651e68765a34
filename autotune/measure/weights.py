"""The pipelines a worker measures: built once, kept pristine in host memory, copied per trial."""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

from autotune.measure.records import Phases, TrialJob


def run_pipeline(pipe: Any, job: TrialJob, steps: int | None = None,
                 capture_latents: list[Any] | None = None) -> Any:
    """Call the pipeline as the target says (call.py: text-to-image, image-to-image, video...)."""
    from autotune.models.call import call_pipeline

    target = job.target if steps is None else dataclasses.replace(job.target, steps=steps)
    if capture_latents is None:
        return call_pipeline(pipe, target, job.seed)
    return call_pipeline(pipe, target, job.seed, capture_latents=capture_latents)


class HostWeights:
    """Pristine pipelines in host memory, one per (model, load arguments: `knobs.load_key`, the
    dtype); each trial gets a deep copy.

    Copying ~2 GB of fp16 weights in RAM takes a fraction of a second; reading and converting
    them from disk took 8-25 s per trial on the H100/H200 runs. A pipeline larger than
    `max_fraction` of the host RAM is not kept (the copy would double it): it is rebuilt instead.
    """

    def __init__(self, max_fraction: float = 0.35) -> None:
        self._pristine: dict[tuple, Any] = {}
        self.max_fraction = max_fraction
        #: Bytes of the pristine copy kept: in the worker's resident set while every trial runs,
        #: but not the trial's (a production process has no such copy; trials.classify).
        self.pristine_bytes = 0

    def fresh(self, model: str, settings: dict[str, object], phases: Phases) -> Any:
        from autotune import knobs
        from autotune.models.pipelines import build_pipeline

        key = (model, knobs.load_key(settings))
        if key not in self._pristine:
            start = time.perf_counter()
            pipe = build_pipeline(model, **knobs.load_kwargs(settings))
            phases.load_weights_s = time.perf_counter() - start
            size = weight_bytes(pipe)
            # One copy at a time (a search tunes one model): the last one goes either way. A
            # pipeline loaded onto the device (bitsandbytes quantizes as it loads, on the GPU) is
            # not kept: a copy of it would hold device memory through every trial.
            if not self._worth_keeping(size) or not on_host(pipe):
                self._pristine, self.pristine_bytes = {}, 0
                return pipe
            self._pristine, self.pristine_bytes = {key: pipe}, size
        start = time.perf_counter()
        fresh = copy.deepcopy(self._pristine[key])
        phases.copy_weights_s = time.perf_counter() - start
        return fresh

    def _worth_keeping(self, size: int) -> bool:
        from autotune.hardware import total_ram_bytes

        ram = total_ram_bytes()
        return ram is None or size < self.max_fraction * ram


def on_host(pipe: Any) -> bool:
    """Whether every weight of the pipeline's modules is in host memory."""
    import torch

    return all(t.device.type == "cpu" for m in pipe.components.values() if isinstance(m, torch.nn.Module)
               for t in (*m.parameters(), *m.buffers()))


def weight_bytes(pipe: Any) -> int:
    """Bytes of the parameters and buffers of the pipeline's modules."""
    import torch

    return sum(t.numel() * t.element_size() for m in pipe.components.values() if isinstance(m, torch.nn.Module)
               for t in (*m.parameters(), *m.buffers()))
