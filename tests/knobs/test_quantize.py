"""quantize (autotune/knobs/builtin/quantize.py).

Without torchao every scheme must say how to get it (the conformance test checks the refusal);
with it (CI installs torchao for this module in a step of its own) the CPU schemes apply, and the
planner's weight bytes match what torchao really stores."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs
from autotune.knobs.builtin.quantize import INSTALL, SCHEMES
from autotune.planner import Planner
from autotune.planner.stats import weight_stats
from autotune.target import Target

HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
needs_torchao = pytest.mark.skipif(not HAS_TORCHAO, reason=f"torchao is not installed ({INSTALL})")


def _is_quantized(weight) -> bool:
    return type(weight).__module__.startswith("torchao")


def check(pipe, value):
    linears = [m for m in pipe.unet.modules() if isinstance(m, torch.nn.Linear)]
    if value == "none":
        assert not any(_is_quantized(m.weight) for m in linears)
    else:
        assert linears and all(_is_quantized(m.weight) for m in linears)
        assert not _is_quantized(pipe.unet.conv_in.weight)  # convolutions keep their dtype
        assert not any(_is_quantized(m.weight) for m in pipe.text_encoder.modules()
                       if isinstance(m, torch.nn.Linear))  # only the denoiser


test_conformance = conformance("quantize", check)


def real_bytes(module: torch.nn.Module) -> int:
    """What the module's parameters hold, torchao's inner tensors (values, scales, zero points) included."""
    total = 0
    for param in module.parameters():
        tensor = param.data if _is_quantized(param.data) else param
        if _is_quantized(tensor):
            inner, _ = tensor.__tensor_flatten__()
            total += sum(getattr(tensor, n).numel() * getattr(tensor, n).element_size() for n in inner)
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def test_without_torchao_each_scheme_names_the_install(monkeypatch):
    from autotune.knobs import Context

    ctx = Context(device="cuda", components=frozenset({"unet", "vae"}))
    monkeypatch.setattr(Context, "has_package", lambda self, name: False)
    knob = knobs.get("quantize")
    assert knob.reason_unavailable("none", ctx) is None
    for value in SCHEMES:
        assert INSTALL in knob.reason_unavailable(value, ctx)


def test_int4_needs_cuda_kernels(monkeypatch):
    from autotune.knobs import Context

    monkeypatch.setattr(Context, "has_package", lambda self, name: True)
    knob = knobs.get("quantize")
    assert "CUDA" in knob.reason_unavailable("int4-weight-only", Context(device="cpu", components=frozenset({"unet"})))
    assert knob.reason_unavailable("int4-weight-only", Context(device="cuda", components=frozenset({"unet"}))) is None
    assert knob.reason_unavailable("int8-weight-only", Context(device="cpu", components=frozenset({"unet"}))) is None


def test_it_is_applied_after_dtype_and_fusing_and_never_with_layerwise_fp8():
    names = [k.name for k in knobs.all_knobs()]
    assert names.index("dtype") < names.index("quantize") and names.index("fuse_qkv") < names.index("quantize")
    assert any(c.knob_a == "quantize" and c.knob_b == "layerwise_fp8" for c in knobs.conflicts())


def test_the_planner_counts_scales_and_zero_points_per_row():
    layer = torch.nn.Sequential(torch.nn.Linear(256, 64))
    storage = knobs.get("quantize").plan.storage(layer, "int8-weight-only")
    assert storage == {"0.weight": pytest.approx(1 + 5 / 256)}
    stats = weight_stats(layer, storage=storage)
    assert stats.total == 64 * 256 + 64 * 5 + 64 * 4  # int8 values, fp32 scale + int8 zero point a row, fp32 bias
    assert stats.largest_upcast_layer == (64 * 256 + 64) * 4  # dequantized while it runs
    int4 = knobs.get("quantize").plan.storage(torch.nn.Sequential(torch.nn.Linear(512, 8)), "int4-weight-only")
    assert int4 == {"0.weight": pytest.approx(0.5 + 4 / 128)}


@needs_torchao
@pytest.mark.parametrize("value", ["int8-weight-only", "int8-dynamic", "float8-weight-only"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_the_planner_predicts_the_quantized_weights_within_2_percent(tiny_pipe, value, dtype):
    """The plan's denoiser weights against the bytes torchao's tensors hold after `quantize_`."""
    from autotune.knobs.settings import apply_settings

    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**30)
    assignment = {"dtype": dtype, "quantize": value}
    predicted = Planner(target)._weight_stats("unet", {**{k.name: k.default for k in knobs.all_knobs()}, **assignment})
    apply_settings(tiny_pipe, assignment, device="cpu")
    measured = real_bytes(tiny_pipe.unet)
    assert abs(predicted.total - measured) / measured < 0.02


@needs_torchao
def test_an_int8_weight_only_trial_runs_on_cpu():
    from autotune.measure import worker as _worker
    from autotune.measure.backends.cpu import CpuBackend
    from autotune.measure.measurer import TrialJob

    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**30)
    result = _worker.measure(TrialJob(target, {"quantize": "int8-weight-only"}, runs=2, max_runs=2),
                             backend=CpuBackend())
    assert result.status == "ok" and len(result.latencies_s) == 2 and result.peak_bytes > 0
    plain = _worker.measure(TrialJob(target, {}, runs=2, max_runs=2), backend=CpuBackend())
    # The tracker counts torchao's inner tensors, not the logical fp32 size its wrappers report.
    assert result.memory.resident_weights < plain.memory.resident_weights
    assert result.peak_bytes < plain.peak_bytes
    defaults = {k.name: k.default for k in knobs.all_knobs()}
    predicted = Planner(target).predict({**defaults, "quantize": "int8-weight-only"})
    assert abs(predicted.total_bytes - result.peak_bytes) / result.peak_bytes < 0.02
