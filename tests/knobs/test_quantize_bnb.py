"""quantize_bnb (autotune/knobs/builtin/quantize_bnb.py): bitsandbytes quantizes while the weights load, on a GPU.
No GPU here: the refusals, the load path (diffusers' own `quantization_config`), the check on an
already loaded pipeline and the planner's bytes are tested; a run needs CUDA."""
from __future__ import annotations

import pytest
import torch
from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs
from autotune.knobs import ApplyContext, Context
from autotune.knobs.builtin.quantize_bnb import INSTALL, quantization_config
from autotune.planner import Planner
from autotune.target import Target


def check(pipe, value):
    assert value == "none"  # the others need CUDA: the conformance test checks their refusal
    assert not any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in pipe.unet.modules())


test_conformance = conformance("quantize_bnb", check)


def test_it_needs_cuda_and_bitsandbytes(monkeypatch):
    knob = knobs.get("quantize_bnb")
    components = frozenset({"unet", "vae"})
    assert "needs CUDA" in knob.reason_unavailable("nf4", Context(device="cpu", components=components))
    monkeypatch.setattr(Context, "has_package", lambda self, name: False)
    assert INSTALL in knob.reason_unavailable("nf4", Context(device="cuda", components=components))
    monkeypatch.setattr(Context, "has_package", lambda self, name: True)
    assert knob.reason_unavailable("int8", Context(device="cuda", components=components)) is None


def test_the_pipeline_is_loaded_with_diffusers_quantization_config(monkeypatch, tmp_path):
    """The config quantizes the denoiser only, and reaches `from_pretrained` for a folder and
    for a built-in (saved first: a built-in is otherwise built from its configs)."""
    from diffusers import DiffusionPipeline

    from autotune.models import pipelines

    config = knobs.load_kwargs({"quantize_bnb": "nf4"})["quantization_config"]
    assert config.quant_backend == "bitsandbytes_4bit" and config.components_to_quantize == ["unet", "transformer"]
    assert config.quant_kwargs["bnb_4bit_quant_type"] == "nf4"
    assert quantization_config("int8").quant_kwargs == {"load_in_8bit": True}
    assert knobs.load_kwargs({"quantize_bnb": "none"}) == {"torch_dtype": torch.float32}  # nothing added
    assert knobs.load_key({"quantize_bnb": "nf4"}) != knobs.load_key({})  # its own pristine copy

    seen = []
    monkeypatch.setattr(pipelines, "model_info", lambda model: None)
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", lambda path, **kw: seen.append((str(path), kw)))
    with pytest.raises(AttributeError):  # the fake returns None: the call is what is checked
        pipelines.build_pipeline(str(tmp_path), **knobs.load_kwargs({"quantize_bnb": "nf4"}))
    path, kwargs = seen[-1]
    assert path == str(tmp_path) and kwargs["dtype"] == torch.float32
    assert kwargs["quantization_config"].quant_backend == "bitsandbytes_4bit"
    cached = []
    monkeypatch.setattr(pipelines, "load_cached_builtin", lambda *a, **kw: cached.append((a, kw)))
    pipelines.build_pipeline("builtin:tiny-sd", torch.float16, quantization_config=config)
    assert cached == [(("builtin:tiny-sd", torch.float16), {"quantization_config": config})]


def test_a_pipeline_loaded_without_it_is_refused_with_the_fix(tiny_pipe):
    knob = knobs.get("quantize_bnb")
    knob.apply(tiny_pipe, "none", ApplyContext("cuda"))
    with pytest.raises(ValueError, match=r"load the pipeline with quantization_config=.*quantize_bnb.quantization_config\('nf4'\)"):
        knob.apply(tiny_pipe, "nf4", ApplyContext("cuda"))


def test_never_with_torchao_or_fp8_casting():
    space_conflicts = [(c.knob_a, c.knob_b) for c in knobs.conflicts() if c.knob_a == "quantize_bnb"]
    assert ("quantize_bnb", "quantize") in space_conflicts and ("quantize_bnb", "layerwise_fp8") in space_conflicts


def test_the_planner_counts_nf4_and_int8_bytes_and_loading_takes_only_those():
    """NF4: half a byte a weight and an fp32 absmax per 64; LLM.int8: a byte and an fp32 scale a
    row. Quantized as it loads, so the host RAM loading takes is the quantized size too."""
    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**30, device="cuda")
    defaults = {k.name: k.default for k in knobs.all_knobs()}
    planner = Planner(target)
    linears = [m for m in planner._module("unet", defaults).modules() if isinstance(m, torch.nn.Linear)]
    weights = sum(m.weight.numel() for m in linears)
    plain = planner._weight_stats("unet", defaults)
    nf4 = planner._weight_stats("unet", {**defaults, "quantize_bnb": "nf4"})
    int8 = planner._weight_stats("unet", {**defaults, "quantize_bnb": "int8"})
    assert plain.total - nf4.total == pytest.approx(weights * (4 - 0.5 - 4 / 64), abs=len(linears))
    assert plain.total - int8.total == pytest.approx(weights * 3 - 4 * sum(m.out_features for m in linears),
                                                     abs=len(linears))
    assert nf4.loaded_bytes == nf4.total < plain.loaded_bytes
    fp8 = planner._weight_stats("unet", {**defaults, "layerwise_fp8": True})  # cast after loading
    assert fp8.total < fp8.loaded_bytes == plain.loaded_bytes
    host = planner.predict({**defaults, "quantize_bnb": "nf4", "offload": "model"}).host_bytes
    assert host < planner.predict({**defaults, "offload": "model"}).host_bytes


def test_the_worker_keeps_no_pristine_copy_of_a_pipeline_on_the_device(tiny_pipe, monkeypatch):
    from autotune.measure import weights
    from autotune.measure.records import Phases

    assert weights.on_host(tiny_pipe)
    tiny_pipe.unet.conv_in.weight = torch.nn.Parameter(torch.empty_like(tiny_pipe.unet.conv_in.weight, device="meta"))
    assert not weights.on_host(tiny_pipe)
    monkeypatch.setattr("autotune.models.pipelines.build_pipeline", lambda model, **kw: tiny_pipe)
    host = weights.HostWeights()
    assert host.fresh("builtin:tiny-sd", {}, Phases()) is tiny_pipe and host.pristine_bytes == 0
