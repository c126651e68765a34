"""compile (autotune/knobs/builtin/compile.py): cold compiles are excluded on cpu, so the
conformance test checks the reason; the slow tier compiles (tests/profiles/test_compile_cache.py)."""
from __future__ import annotations

import pytest
from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs
from autotune.knobs.settings import apply_settings
from autotune.errors import InvalidAssignmentError


def check(pipe, value):
    assert value == "none"
    assert getattr(pipe.unet, "_compiled_call_impl", None) is None


test_conformance = conformance("compile", check, slow=frozenset({"full", "regional", "full-max-autotune"}))


def test_compiled_values_leave_process_state_and_get_artifacts():
    assert knobs.compiles({"compile": "regional"}) and not knobs.compiles({"compile": "none"})
    assert not knobs.compiles({})
    assert knobs.get("compile").process_state == {"full", "regional", "full-max-autotune", "full-cuda-graphs"}
    assert knobs.compiles({"compile": "full-cuda-graphs"})


def test_cuda_graphs_need_cuda_and_no_offload(tiny_pipe):
    from autotune.knobs import Context

    knob = knobs.get("compile")
    assert "need CUDA" in knob.reason_unavailable("full-cuda-graphs", Context(device="cpu", components=frozenset({"unet"})))
    assert knob.reason_unavailable("full-cuda-graphs", Context(device="cuda", components=frozenset({"unet"}))) is None
    from autotune.knobs.builtin.offload import CHOICES

    for offload in set(CHOICES) - {"none"}:  # every offload that moves weights, whatever its values
        with pytest.raises(InvalidAssignmentError, match="fixed addresses|sequential offload"):
            apply_settings(tiny_pipe, {"compile": "full-cuda-graphs", "offload": offload}, device="cuda")


def test_each_whole_model_mode_reaches_torch_compile(tiny_pipe, monkeypatch):
    seen = []
    monkeypatch.setattr(type(tiny_pipe.unet), "compile", lambda self, **kw: seen.append(kw))
    for value in ("full", "full-max-autotune", "full-cuda-graphs"):
        knobs.get("compile").apply(tiny_pipe, value, None)
    assert seen == [{}, {"mode": "max-autotune-no-cudagraphs"}, {"mode": "reduce-overhead"}]


def test_compile_cannot_trace_sequential_offload(tiny_pipe):
    with pytest.raises(InvalidAssignmentError):
        apply_settings(tiny_pipe, {"compile": "full", "offload": "sequential"}, device="cuda")


def test_compile_is_applied_last():
    assert knobs.all_knobs()[-1].name == "compile"
