"""The conformance test each knob's test module runs (tests/knobs/test_<knob>.py):

    from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

    def check(pipe, value): ...   # the knob's observable effect on the tiny pipeline
    test_conformance = conformance("my_knob", check)

For every value of the knob: either it says why it cannot run on cpu (and applying it is refused),
or it applies to the tiny pipeline, `check` sees its effect, the pipeline still runs, and an exact
(not lossy) value gives the baseline images to float reordering. A value that conflicts with
another knob's default (vae_dtype=fp32 with dtype=fp32) is applied with that knob's first value
it does not conflict with (dtype=fp16), and compared with the baseline only if that one is
exact. A value excluded from the search by default must say why, and is applied all the same
unless it is in `slow` (cold compiles: the slow tier runs those).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from autotune import knobs
from autotune.knobs.settings import apply_settings, pipeline_components
from autotune.errors import InvalidAssignmentError
from autotune.knobs import Context
from autotune.knobs.space import SearchSpace

RUN_KW = dict(height=64, width=64, num_inference_steps=2, output_type="np")
PROMPT = "a cat"


def run(pipe: Any) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(1234)
    return pipe(PROMPT, generator=generator, **RUN_KW).images


def cpu_context(pipe: Any) -> Context:
    return Context(device="cpu", components=pipeline_components(pipe))


@pytest.fixture(scope="module")
def baseline_images() -> np.ndarray:
    """Images of an untouched tiny pipeline (every knob at its default)."""
    from autotune.models.pipelines import build_pipeline

    return run(build_pipeline("builtin:tiny-sd"))


def partners(name: str, value: Any) -> dict[str, Any]:
    """The other knobs' values `value` needs: for each conflict with a default, the other knob's
    first choice outside the conflict."""
    defaults = {k.name: k.default for k in knobs.all_knobs()}
    needed: dict[str, Any] = {}
    for conflict in knobs.iter_conflicts({**defaults, name: value}):
        other, values = ((conflict.knob_b, conflict.values_b) if conflict.knob_a == name
                         else (conflict.knob_a, conflict.values_a))
        needed[other] = next(v for v in knobs.get(other).choices if v not in values)
    return needed


def conformance(name: str, check: Callable[[Any, Any], None], slow: frozenset[Any] = frozenset()) -> Callable[..., None]:
    """The parametrized conformance test of knob `name` (assign it to a `test_*` name)."""
    knob = knobs.get(name)

    @pytest.mark.parametrize("value", knob.choices, ids=[f"{name}={v}" for v in knob.choices])
    def test_conformance(tiny_pipe: Any, baseline_images: np.ndarray, value: Any) -> None:
        ctx = cpu_context(tiny_pipe)
        reason = knob.reason_unavailable(value, ctx)
        if reason is not None:
            assert isinstance(reason, str) and reason.strip()
            assert value != knob.default
            with pytest.raises(InvalidAssignmentError, match=name):
                apply_settings(tiny_pipe, {name: value}, device="cpu")
            return
        excluded = knob.excluded_by_default(value, ctx)
        if excluded is not None:
            status = next(s for s in SearchSpace(ctx).statuses if (s.knob, s.value) == (name, value))
            assert status.state == "excluded" and status.reason == excluded and excluded.strip()
        if value in slow:
            return

        needed = partners(name, value)
        applied = apply_settings(tiny_pipe, {name: value, **needed}, device="cpu")
        assert dict(applied)[name] == value
        assert [n for n, _ in applied] == [k.name for k in knobs.all_knobs()]
        check(tiny_pipe, value)

        images = run(tiny_pipe)
        assert images.shape == (1, 64, 64, 3)
        assert np.isfinite(images).all()
        if not knob.is_lossy(value) and not any(knobs.get(k).is_lossy(v) for k, v in needed.items()):
            # exact knobs change only float summation order, not the result
            np.testing.assert_allclose(images, baseline_images, atol=1e-3, rtol=0)

    return test_conformance
