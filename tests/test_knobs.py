"""Knob conformance suite: every (knob, value) in the registry either says why it cannot run on
cpu, or applies to the tiny pipeline with an effect you can observe, and the pipeline still runs."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from autotune import knobs
from autotune.apply import apply_settings, hooked_modules, pipeline_components
from autotune.errors import InvalidAssignmentError, UnknownKnobError
from autotune.knobs import ApplyContext, Context, Knob, Stage
from autotune.space import SearchSpace
from zoo import zoo  # noqa: F401  (the session fixture of saved tiny pipelines)

PAIRS = [(k.name, v) for k in knobs.all_knobs() for v in k.choices]
SLOW = {("compile", "full"), ("compile", "regional")}
RUN_KW = dict(height=64, width=64, num_inference_steps=2, output_type="np")
PROMPT = "a cat"


def _run(pipe):
    generator = torch.Generator("cpu").manual_seed(1234)
    return pipe(PROMPT, generator=generator, **RUN_KW).images


def _cpu_ctx(pipe) -> Context:
    return Context(device="cpu", components=pipeline_components(pipe))


@pytest.fixture(scope="module")
def baseline_images():
    """Images of an untouched tiny pipeline (every knob at its default)."""
    from autotune.pipelines import build_pipeline

    return _run(build_pipeline("builtin:tiny-sd"))


# ---- observable effects, one checker per knob ---------------------------------------------------

def _all_params(pipe):
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            for pname, param in module.named_parameters():
                yield f"{name}.{pname}", param


def check_dtype(pipe, value):
    expected = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[value]
    assert pipe.unet.dtype == expected
    assert pipe.unet.conv_in.weight.dtype == expected
    assert pipe.vae.dtype == expected
    assert pipe.text_encoder.dtype == expected


def check_layerwise_fp8(pipe, value):
    weight = pipe.unet.conv_in.weight
    if value:
        assert weight.dtype == torch.float8_e4m3fn
        assert any(p.dtype == torch.float8_e4m3fn for p in pipe.unet.parameters())
        assert any(name.startswith("unet") for name in hooked_modules(pipe))
        # only the denoiser is stored in fp8
        assert pipe.vae.encoder.conv_in.weight.dtype == torch.float32
    else:
        assert not any(p.dtype == torch.float8_e4m3fn for _, p in _all_params(pipe))
        assert hooked_modules(pipe) == []


def check_channels_last(pipe, value):
    for conv in (pipe.unet.conv_in.weight, pipe.vae.decoder.conv_in.weight):
        assert conv.dim() == 4
        assert conv.is_contiguous(memory_format=torch.channels_last) is value
    if not value:
        assert pipe.unet.conv_in.weight.is_contiguous()


def check_offload(pipe, value):
    assert value == "none"  # the only offload value available on cpu
    for name, param in _all_params(pipe):
        assert param.device.type == "cpu", name
    assert hooked_modules(pipe) == []


def check_attention(pipe, value):
    processors = pipe.unet.attn_processors
    assert processors
    names = {type(p).__name__ for p in processors.values()}
    if value == "sliced":
        assert all(
            type(p).__name__ == "SlicedAttnProcessor" or getattr(p, "slice_size", None) is not None
            for p in processors.values()
        ), names
        assert all(getattr(p, "slice_size", None) for p in processors.values())
    elif value == "sdpa":
        assert names == {"AttnProcessor2_0"}
    else:  # pragma: no cover - xformers is unavailable on cpu
        raise AssertionError(value)


def check_attention_backend(pipe, value):
    assert value == "native"  # the only value on cpu; and the UNet does not dispatch through it
    assert all(getattr(p, "_attention_backend", None) is None for p in pipe.unet.attn_processors.values())


def check_vae_slicing(pipe, value):
    assert pipe.vae.use_slicing is value


def check_vae_tiling(pipe, value):
    assert pipe.vae.use_tiling is value


def check_compile(pipe, value):
    assert value == "none"
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"
    assert getattr(pipe.unet, "_compiled_call_impl", None) is None


CHECKS = {
    "dtype": check_dtype,
    "layerwise_fp8": check_layerwise_fp8,
    "channels_last": check_channels_last,
    "offload": check_offload,
    "attention": check_attention,
    "attention_backend": check_attention_backend,
    "vae_slicing": check_vae_slicing,
    "vae_tiling": check_vae_tiling,
    "compile": check_compile,
}


def test_every_registered_knob_has_a_conformance_check():
    assert {k.name for k in knobs.all_knobs()} == set(CHECKS)


@pytest.mark.parametrize(("name", "value"), PAIRS, ids=[f"{n}={v}" for n, v in PAIRS])
def test_knob_value_conformance(tiny_pipe, baseline_images, name, value):
    knob = knobs.get(name)
    ctx = _cpu_ctx(tiny_pipe)
    reason = knob.reason_unavailable(value, ctx)
    if reason is not None:
        assert isinstance(reason, str) and reason.strip()
        assert value != knob.default
        with pytest.raises(InvalidAssignmentError, match=name):
            apply_settings(tiny_pipe, {name: value}, device="cpu")
        return
    if (name, value) in SLOW:
        status = next(s for s in SearchSpace(ctx).statuses if (s.knob, s.value) == (name, value))
        assert status.state == "excluded"
        assert isinstance(status.reason, str) and status.reason.strip()
        assert isinstance(knob.excluded_by_default(value, ctx), str)
        return

    applied = apply_settings(tiny_pipe, {name: value}, device="cpu")
    assert dict(applied)[name] == value
    assert [n for n, _ in applied] == [k.name for k in knobs.all_knobs()]
    CHECKS[name](tiny_pipe, value)

    images = _run(tiny_pipe)
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all()
    if not knob.is_lossy(value):
        # exact knobs change only float summation order, not the result
        np.testing.assert_allclose(images, baseline_images, atol=1e-3, rtol=0)


def test_defaults_reproduce_baseline_exactly(tiny_pipe, baseline_images):
    apply_settings(tiny_pipe, {}, device="cpu")
    np.testing.assert_array_equal(_run(tiny_pipe), baseline_images)


def test_lossy_dtype_actually_changes_output(tiny_pipe, baseline_images):
    apply_settings(tiny_pipe, {"dtype": "bf16"}, device="cpu")
    assert not np.array_equal(_run(tiny_pipe), baseline_images)


def test_apply_settings_refuses_bad_settings(tiny_pipe):
    with pytest.raises(UnknownKnobError):
        apply_settings(tiny_pipe, {"warp_drive": True}, device="cpu")
    with pytest.raises(InvalidAssignmentError):
        apply_settings(tiny_pipe, {"dtype": "fp64"}, device="cpu")
    with pytest.raises(InvalidAssignmentError):
        apply_settings(tiny_pipe, {"compile": "full", "offload": "sequential"}, device="cuda")
    # nothing was applied on the way to the refusal
    assert tiny_pipe.unet.dtype == torch.float32
    assert hooked_modules(tiny_pipe) == []


@pytest.mark.parametrize("value", ["group-block-1", "group-leaf"])
def test_group_offload_applies_mechanically_on_cpu(tiny_pipe, baseline_images, value):
    assert hooked_modules(tiny_pipe) == []
    knobs.get("offload").apply(tiny_pipe, value, ApplyContext("cpu"))
    hooked = hooked_modules(tiny_pipe)
    assert hooked
    assert any(h.startswith("unet") for h in hooked)
    assert any(h.startswith("vae") for h in hooked)
    # cpu -> cpu group offload changes where weights wait, not the numbers
    np.testing.assert_allclose(_run(tiny_pipe), baseline_images, atol=1e-3, rtol=0)


def test_group_leaf_hooks_more_modules_than_block(tiny_pipe):
    from autotune.pipelines import build_pipeline

    other = build_pipeline("builtin:tiny-sd")
    knobs.get("offload").apply(tiny_pipe, "group-block-1", ApplyContext("cpu"))
    knobs.get("offload").apply(other, "group-leaf", ApplyContext("cpu"))
    assert len(hooked_modules(other)) > len(hooked_modules(tiny_pipe))
    assert "unet.conv_in" in hooked_modules(other)


def test_offload_apply_rejects_unknown_mode(tiny_pipe):
    with pytest.raises(ValueError):
        knobs.get("offload").apply(tiny_pipe, "teleport", ApplyContext("cpu"))


# ---- the registry itself --------------------------------------------------------------------------

@pytest.mark.parametrize("knob", knobs.all_knobs(), ids=lambda k: k.name)
def test_registry_entry_is_well_formed(knob):
    assert isinstance(knob.help, str) and knob.help.strip()
    assert knob.default in knob.choices
    assert len(set(knob.choices)) == len(knob.choices)
    assert all(type(c) is type(knob.default) for c in knob.choices)
    assert knob.lossy <= set(knob.choices)
    assert not knob.is_lossy(knob.default)
    assert isinstance(knob.stage, Stage)
    assert callable(knob.apply)
    assert knobs.get(knob.name) is knob


def test_defaults_are_always_available():
    bare = Context(device="cpu", components=frozenset())
    for knob in knobs.all_knobs():
        assert knob.reason_unavailable(knob.default, bare) is None


def test_lossy_values():
    assert knobs.get("dtype").is_lossy("fp16") and knobs.get("dtype").is_lossy("bf16")
    assert not knobs.get("dtype").is_lossy("fp32")
    assert knobs.get("layerwise_fp8").is_lossy(True)
    assert not knobs.get("attention").is_lossy("sliced")
    assert not knobs.get("offload").is_lossy("group-leaf")


def test_missing_components_make_values_unavailable():
    no_denoiser = Context(device="cuda", components=frozenset({"vae", "text_encoder"}))
    reason = knobs.get("layerwise_fp8").reason_unavailable(True, no_denoiser)
    assert reason and "unet" in reason
    no_vae = Context(device="cuda", components=frozenset({"unet"}))
    assert knobs.get("vae_slicing").reason_unavailable(True, no_vae)
    # channels_last needs only one of unet / vae
    assert knobs.get("channels_last").reason_unavailable(True, no_vae) is None


def test_streamed_offload_needs_cuda():
    cuda = Context(device="cuda", components=frozenset({"unet", "vae"}))
    assert knobs.get("offload").reason_unavailable("group-leaf-stream", cuda) is None
    assert knobs.get("offload").reason_unavailable("group-leaf-stream", Context("cpu", cuda.components))


def test_all_knobs_in_stage_order():
    stages = [k.stage for k in knobs.all_knobs()]
    assert stages == sorted(stages)
    assert knobs.all_knobs()[-1].name == "compile"


def test_conflicts_reference_known_values():
    assert knobs.conflicts()
    for conflict in knobs.conflicts():
        assert conflict.values_a <= set(knobs.get(conflict.knob_a).choices)
        assert conflict.values_b <= set(knobs.get(conflict.knob_b).choices)
        assert conflict.reason.strip()


def test_get_unknown_knob():
    with pytest.raises(UnknownKnobError) as info:
        knobs.get("warp_drive")
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert message.startswith("unknown knob 'warp_drive'")
    assert "dtype" in message  # lists the known knobs


def test_register_duplicate_name_raises():
    before = [k.name for k in knobs.all_knobs()]
    with pytest.raises(ValueError, match="dtype"):
        knobs.register(knobs.get("dtype"))
    renamed = dataclasses.replace(knobs.get("vae_slicing"), help="another vae slicing")
    with pytest.raises(ValueError):
        knobs.register(renamed)
    assert [k.name for k in knobs.all_knobs()] == before
    assert knobs.get("vae_slicing").help != "another vae slicing"


def test_register_default_not_in_choices_raises():
    from autotune.knobs import registry

    name = "_test_throwaway_knob"
    bad = Knob(name=name, choices=("a", "b"), default="c", stage=Stage.TUNE, help="x",
               apply=lambda pipe, value, ctx: None)
    try:
        with pytest.raises(ValueError, match="default"):
            knobs.register(bad)
        with pytest.raises(UnknownKnobError):
            knobs.get(name)
    finally:
        registry._KNOBS.pop(name, None)


def test_register_and_get_a_new_knob():
    from autotune.knobs import registry

    name = "_test_throwaway_knob2"
    knob = Knob(name=name, choices=(False, True), default=False, stage=Stage.LOAD, help="x",
                apply=lambda pipe, value, ctx: None)
    try:
        assert knobs.register(knob) is knob
        assert knobs.get(name) is knob
        names = [k.name for k in knobs.all_knobs()]
        assert names.index(name) < names.index("offload")  # LOAD stage sorts before PLACE
    finally:
        registry._KNOBS.pop(name, None)
    assert name not in [k.name for k in knobs.all_knobs()]


# ---- availability from the modules themselves (module facts) -----------------------------------

def _cuda_ctx(name: str) -> Context:
    from zoo import build

    from autotune.knobs.probe import pipeline_context

    return pipeline_context(build(name), "cuda")


def _reason(ctx: Context, name: str, value) -> str | None:
    return knobs.get(name).reason_unavailable(value, ctx)


@pytest.fixture(scope="module")
def zoo_contexts():
    return {name: _cuda_ctx(name) for name in ("sd", "sdxl", "pixart", "wan")}


#: (kind, knob, value) -> available on cuda; when not, words the reason must contain.
WHERE = [
    ("sd", "channels_last", True, None),
    ("pixart", "channels_last", True, None),
    ("wan", "channels_last", True, ["AutoencoderKLWan", "3-D convolutions", "WanTransformer3DModel"]),
    ("sd", "attention", "sliced", None),
    ("sdxl", "attention", "sliced", None),
    ("pixart", "attention", "sliced", ["PixArtTransformer2DModel", "set_attention_slice"]),
    ("wan", "attention", "sliced", ["WanTransformer3DModel", "set_attention_slice"]),
    ("wan", "attention_backend", "_native_flash", None),
    ("sd", "attention_backend", "_native_flash", ["UNet2DConditionModel", "set_attention_backend"]),
    ("pixart", "attention_backend", "_native_flash", ["PixArtTransformer2DModel", "change nothing"]),
    ("sd", "compile", "regional", None),
    ("wan", "compile", "regional", None),
    ("pixart", "compile", "regional", ["PixArtTransformer2DModel", "repeated blocks"]),
    ("wan", "vae_tiling", True, None),
]


@pytest.mark.parametrize(("kind", "name", "value", "words"), WHERE,
                         ids=[f"{k}-{n}={v}" for k, n, v, _ in WHERE])
def test_availability_comes_from_the_modules(zoo_contexts, kind, name, value, words):
    reason = _reason(zoo_contexts[kind], name, value)
    if words is None:
        assert reason is None
    else:
        assert reason is not None
        for word in words:
            assert word in reason, reason


def test_attention_backend_needs_cuda_and_its_package(zoo_contexts):
    wan = zoo_contexts["wan"]
    cpu = dataclasses.replace(wan, device="cpu")
    assert "cuda" in _reason(cpu, "attention_backend", "_native_flash")
    if not wan.has_package("sageattention"):
        assert "sageattention" in _reason(wan, "attention_backend", "sage")
    assert _reason(cpu, "attention_backend", "native") is None


def test_attention_backend_unknown_without_module_facts():
    bare = Context(device="cuda", components=frozenset({"transformer", "vae"}))
    assert "probe" in _reason(bare, "attention_backend", "_native_flash")


def test_half_precision_kernels_conflict_with_fp32():
    from autotune.space import check_values

    with pytest.raises(InvalidAssignmentError, match="fp16/bf16"):
        check_values({"attention_backend": "_native_flash", "dtype": "fp32"})
    check_values({"attention_backend": "_native_flash", "dtype": "bf16"})
    check_values({"attention_backend": "_native_efficient", "dtype": "fp32"})


def test_meta_probe_matches_the_loaded_modules(tiny_pipe):
    from autotune.knobs.probe import model_context, pipeline_context

    before = model_context("builtin:tiny-sd", "cpu")
    loaded = pipeline_context(tiny_pipe, "cpu")
    assert before.modules == loaded.modules
    assert set(before.modules) == {"unet", "vae"}  # diffusers models only
    assert before.component_classes["unet"] == ("diffusers", "UNet2DConditionModel")
    unet = before.modules["unet"]
    assert unet.conv_dims == {2} and unet.attention_slicing and not unet.attention_dispatch


def test_meta_probe_of_a_saved_video_folder(zoo):
    from zoo import build

    from autotune.knobs.probe import model_context, pipeline_context

    folder = str(zoo["wan"])
    assert model_context(folder, "cuda").modules == pipeline_context(build("wan"), "cuda").modules


def test_channels_last_touches_only_2d_conv_modules():
    from zoo import build

    wan = build("wan")
    knobs.get("channels_last").apply(wan, True, ApplyContext("cpu"))  # no rank-5 error: nothing to do
    assert wan.vae.decoder.conv_in.weight.dim() == 5 and wan.vae.decoder.conv_in.weight.is_contiguous()
    pixart = build("pixart")
    knobs.get("channels_last").apply(pixart, True, ApplyContext("cpu"))
    assert pixart.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not pixart.vae.decoder.conv_in.weight.is_contiguous()


def test_attention_backend_applies_to_dispatching_transformers_and_undoes():
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    from zoo import build

    from autotune.call import call_kwargs, output_array
    from autotune.target import Target

    pipe = build("wan")
    target = Target(model="zoo:wan", height=32, width=32, batch=1, steps=2, max_vram=2**30, frames=5,
                    call_args={"max_sequence_length": 16})
    baseline = output_array(pipe(**call_kwargs(pipe, target, 0)))
    processors = lambda: [m.processor for m in pipe.transformer.modules() if hasattr(m, "processor")]  # noqa: E731
    active = _AttentionBackendRegistry._active_backend
    knob = knobs.get("attention_backend")
    try:
        # _native_flash is searched on cuda only, but PyTorch's CPU flash kernel runs it here too
        knob.apply(pipe, "_native_flash", ApplyContext("cpu"))
        assert {str(p._attention_backend.value) for p in processors()} == {"_native_flash"}
        np.testing.assert_allclose(output_array(pipe(**call_kwargs(pipe, target, 0))), baseline, atol=1e-5)
        knob.apply(pipe, "native", ApplyContext("cpu"))
        assert all(p._attention_backend is None for p in processors())
        assert _AttentionBackendRegistry._active_backend.value == "native"
    finally:
        _AttentionBackendRegistry._active_backend = active
