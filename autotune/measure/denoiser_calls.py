"""The denoiser's error per call: the knob, not the trajectory.

Float differences compound through 20-50 denoising steps, so the final image of an exact
reordering can drift far from the reference's. The reference run therefore keeps a few of its
denoiser calls (inputs and output: the first, middle and last step); a trial replays those exact
inputs through its own denoiser, cast to the dtypes and devices its own pipeline passed, and the
SQNR of its output against the reference's says what the setting does to one call.

Runs in the worker (imports torch). Pipelines whose denoiser takes arguments this cannot store
(anything beyond tensors, plain values and one level of dicts of them) are left unmeasured.
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from autotune.measure.records import Json

log = logging.getLogger(__name__)

#: Key prefix of the calls in the reference file (quality.save_reference's extra arrays).
PREFIX = "denoiser/"
META_KEY = PREFIX + "meta"
DENOISER_NAMES = ("unet", "transformer")


class Unstorable(TypeError):
    """A denoiser argument this module cannot store or rebuild."""


def denoiser_of(pipe: Any) -> Any:
    for name in DENOISER_NAMES:
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    return None


def kept_calls(steps: int) -> set[int]:
    """Which calls the reference keeps: the first, the middle and the last step's."""
    return {0, steps // 2, max(0, steps - 1)}


def _flatten(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """A JSON description of an argument; its tensors go to `arrays` under `key`."""
    import torch

    if isinstance(value, torch.Tensor):
        arrays[key] = value.detach().float().cpu().numpy()
        return {"tensor": key}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if isinstance(value, dict):
        return {"dict": {str(k): _flatten(v, f"{key}.{k}", arrays) for k, v in value.items()}}
    raise Unstorable(f"cannot store a denoiser argument of type {type(value).__name__}")


def _output_tensor(output: Any) -> Any:
    if isinstance(output, tuple):
        return output[0]
    return getattr(output, "sample", output)


class Recorder:
    """Hooks the denoiser during one pipeline run. `keep` (the reference): store the inputs and
    output of the calls in `kept_calls`; otherwise: note the dtype and device of each tensor
    argument of the first call, which a replay casts the reference's inputs to."""

    def __init__(self, keep: bool, steps: int) -> None:
        self.keep, self.wanted = keep, kept_calls(steps)
        self.arrays: dict[str, np.ndarray] = {}
        self.calls: list[dict[str, Json]] = []  # stored in the reference file as JSON
        self.placement: dict[str, tuple[Any, Any]] = {}
        self.problem: str | None = None
        self._count = 0

    def _hook(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        import torch

        index, self._count = self._count, self._count + 1
        if self.problem is not None:
            return
        if not self.keep:
            if index == 0:
                for key, value in _tensors(args, kwargs):
                    self.placement[key] = (value.dtype, value.device)
            return
        if index not in self.wanted:
            return
        try:
            prefix = f"{PREFIX}{len(self.calls)}"
            spec = {"args": [_flatten(a, f"{prefix}.arg{i}", self.arrays) for i, a in enumerate(args)],
                    "kwargs": {k: _flatten(v, f"{prefix}.{k}", self.arrays) for k, v in kwargs.items()}}
            out = _output_tensor(output)
            if not isinstance(out, torch.Tensor):
                raise Unstorable(f"the denoiser returned {type(out).__name__}")
            self.arrays[f"{prefix}.out"] = out.detach().float().cpu().numpy()
            self.calls.append({**spec, "index": index})
        except Unstorable as exc:
            self.problem = str(exc)

    def reference_arrays(self) -> dict[str, np.ndarray]:
        """What the reference file keeps of the calls (empty when none could be stored)."""
        if self.problem is not None or not self.calls:
            if self.problem:
                log.info("no per-call reference: %s", self.problem)
            return {}
        return {**self.arrays, META_KEY: np.array(json.dumps(self.calls))}


def _tensors(args: tuple, kwargs: dict) -> Iterator[tuple[str, Any]]:
    """Every tensor argument under the name `_flatten` gives it (without the call prefix)."""
    import torch

    def walk(value: Any, key: str) -> Iterator[tuple[str, Any]]:
        if isinstance(value, torch.Tensor):
            yield key, value
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from walk(v, f"{key}.{k}")

    for i, a in enumerate(args):
        yield from walk(a, f"arg{i}")
    for k, v in kwargs.items():
        yield from walk(v, k)


@contextlib.contextmanager
def recording(pipe: Any, keep: bool, steps: int) -> Iterator[Recorder | None]:
    """Record the denoiser's calls while the block runs (None: the pipeline has no denoiser)."""
    module = denoiser_of(pipe)
    if module is None:
        yield None
        return
    recorder = Recorder(keep, steps)
    handle = module.register_forward_hook(recorder._hook, with_kwargs=True)  # noqa: SLF001
    try:
        yield recorder
    finally:
        handle.remove()


def _rebuild(spec: dict[str, Json], key: str, reference: dict[str, np.ndarray], placement: dict[str, tuple[Any, Any]],
             default: tuple[Any, Any]) -> Any:
    import torch

    if "tensor" in spec:
        array = reference[spec["tensor"]]
        dtype, device = placement.get(key, default)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
    if "dict" in spec:
        return {k: _rebuild(v, f"{key}.{k}", reference, placement, default) for k, v in spec["dict"].items()}
    return spec["value"]


def replay_sqnr(pipe: Any, recorder: Recorder | None, reference: dict[str, np.ndarray],
                cap: float | None = None) -> float | None:
    """The lowest SQNR (dB) of this pipeline's denoiser over the reference's kept calls, fed the
    same inputs; None when the reference kept no calls or this trial saw no denoiser call.
    `cap`: as quality.sqnr's (None: its default)."""
    import torch

    from autotune.measure import quality

    if recorder is None or META_KEY not in reference or not recorder.placement:
        return None
    module = denoiser_of(pipe)
    calls = json.loads(str(reference[META_KEY]))
    default = next(iter(recorder.placement.values()))
    scores = []
    with torch.inference_mode():
        for n, call in enumerate(calls):
            args = [_rebuild(a, f"arg{i}", reference, recorder.placement, default) for i, a in enumerate(call["args"])]
            kwargs = {k: _rebuild(v, k, reference, recorder.placement, default) for k, v in call["kwargs"].items()}
            out = _output_tensor(module(*args, **kwargs))
            got, want = out.detach().float().cpu().numpy(), reference[f"{PREFIX}{n}.out"]
            scores.append(quality.sqnr(got, want) if cap is None else quality.sqnr(got, want, cap=cap))
    return min(scores) if scores else None
