"""The search space on a CPU context for the tiny SD pipeline's components."""
from __future__ import annotations

import collections
import itertools

import pytest

from autotune import knobs
from autotune.errors import InvalidAssignmentError, UnknownKnobError
from autotune.knobs import Context
from autotune.knobs.space import (
    SearchSpace,
    assignment_key,
    canonical,
    check_available,
    check_values,
)

#: The tiny SD pipeline's components (what model_info / pipeline_components report for it).
TINY_COMPONENTS = frozenset({"unet", "vae", "text_encoder", "tokenizer", "scheduler"})


@pytest.fixture
def ctx():
    return Context(device="cpu", components=TINY_COMPONENTS)


@pytest.fixture
def space(ctx):
    return SearchSpace(ctx)


def statuses_of(space, knob):
    return {s.value: s for s in space.statuses if s.knob == knob}


def registry_pairs():
    return [(k.name, v) for k in knobs.all_knobs() for v in k.choices]


def test_tiny_components_match_model_info():
    from autotune.models.pipelines import model_info

    assert model_info("builtin:tiny-sd").components == TINY_COMPONENTS


def test_offload_other_than_none_unavailable_on_cpu(space):
    offload = statuses_of(space, "offload")
    assert offload["none"].state == "searched"
    others = [v for v in knobs.get("offload").choices if v != "none"]
    assert others, "offload should have non-default choices"
    for value in others:
        status = offload[value]
        assert status.state == "unavailable", value
        assert isinstance(status.reason, str) and status.reason.strip(), value
    assert space.choices["offload"] == ("none",)
    assert "offload" not in space.searched_knobs


def test_offload_available_on_cuda():
    space = SearchSpace(Context(device="cuda", components=TINY_COMPONENTS))
    offload = statuses_of(space, "offload")
    for value in ("model", "sequential", "group-block-1", "group-leaf"):
        assert offload[value].state == "searched", offload[value]


def test_compile_excluded_by_default_on_cpu(space):
    compile_ = statuses_of(space, "compile")
    assert compile_["none"].state == "searched"
    for value in ("full", "regional"):
        assert compile_[value].state == "excluded"
        assert compile_[value].reason and "include" in compile_[value].reason
    assert space.choices["compile"] == ("none",)


def test_compile_searched_with_include(ctx):
    space = SearchSpace(ctx, include=["compile"])
    compile_ = statuses_of(space, "compile")
    assert compile_.pop("full-cuda-graphs").state == "unavailable"  # CUDA graphs need CUDA
    assert all(s.state == "searched" for s in compile_.values())
    assert set(space.choices["compile"]) == {"none", "full", "regional", "full-max-autotune"}
    assert "compile" in space.searched_knobs


def test_include_one_value_only(ctx):
    space = SearchSpace(ctx, include=["compile=full"])
    compile_ = statuses_of(space, "compile")
    assert compile_["full"].state == "searched"
    assert compile_["regional"].state == "excluded"
    assert space.choices["compile"] == ("none", "full")


def test_include_cannot_make_unavailable_values_available(ctx):
    space = SearchSpace(ctx, include=["offload"])
    assert space.choices["offload"] == ("none",)
    assert statuses_of(space, "offload")["model"].state == "unavailable"


def test_exclude_one_value(ctx, space):
    assert "fp16" in space.choices["dtype"]
    excluded = SearchSpace(ctx, exclude=["dtype=fp16"])
    assert "fp16" not in excluded.choices["dtype"]
    assert set(excluded.choices["dtype"]) == {"fp32", "bf16"}
    status = statuses_of(excluded, "dtype")["fp16"]
    assert status.state == "excluded"
    assert status.reason
    assert excluded.size() < space.size()


def test_exclude_whole_knob_keeps_its_default(ctx):
    space = SearchSpace(ctx, exclude=["vae_tiling"])
    assert space.choices["vae_tiling"] == (False,)
    assert statuses_of(space, "vae_tiling")[True].state == "excluded"


def test_selector_values_parse_case_insensitively(ctx):
    space = SearchSpace(ctx, exclude=["dtype=FP16", "channels_last=true"])
    assert "fp16" not in space.choices["dtype"]
    assert space.choices["channels_last"] == (False,)


def test_selector_with_unknown_knob_raises(ctx):
    with pytest.raises(UnknownKnobError):
        SearchSpace(ctx, include=["warp_drive"])


def test_selector_with_bad_value_raises(ctx):
    with pytest.raises(InvalidAssignmentError, match="dtype"):
        SearchSpace(ctx, exclude=["dtype=fp64"])


@pytest.mark.parametrize("kwargs", [{}, {"include": ["compile"]}, {"exclude": ["dtype=fp16", "attention"]}])
def test_every_registry_value_has_exactly_one_status(ctx, kwargs):
    space = SearchSpace(ctx, **kwargs)
    counts = collections.Counter((s.knob, s.value, type(s.value)) for s in space.statuses)
    expected = collections.Counter((k, v, type(v)) for k, v in registry_pairs())
    assert counts == expected
    assert all(n == 1 for n in counts.values())
    for status in space.statuses:
        assert status.state in ("searched", "unavailable", "excluded")
        if status.state == "searched":
            assert status.value in space.choices[status.knob]
        else:
            assert status.value not in space.choices[status.knob]
            assert isinstance(status.reason, str) and status.reason.strip()


def test_every_knob_default_is_searched(space):
    for knob in knobs.all_knobs():
        assert knob.default in space.choices[knob.name]
    assert space.is_valid(space.default())


def test_check_values_rejects_unknown_knob():
    with pytest.raises(UnknownKnobError, match="warp_drive"):
        check_values({"warp_drive": True})


@pytest.mark.parametrize(
    "assignment",
    [{"dtype": "fp64"}, {"offload": "everything"}, {"vae_slicing": "yes"}, {"vae_slicing": 1},
     {"layerwise_fp8": 0}, {"dtype": None}],
)
def test_check_values_rejects_bad_values(assignment):
    with pytest.raises(InvalidAssignmentError):
        check_values(assignment)


def test_check_values_rejects_conflict():
    with pytest.raises(InvalidAssignmentError) as info:
        check_values({"compile": "full", "offload": "sequential"})
    message = str(info.value)
    assert "compile" in message and "offload" in message and "sequential" in message


def test_check_values_allows_non_conflicting_compile():
    assert check_values({"compile": "full", "offload": "model"}) == {"offload": "model", "compile": "full"}


def test_check_values_returns_canonical_order():
    checked = check_values({"compile": "none", "vae_slicing": True, "dtype": "bf16"})
    assert list(checked) == ["dtype", "vae_slicing", "compile"]


def test_canonical_orders_keys_by_stage():
    shuffled = {k.name: k.default for k in reversed(knobs.all_knobs())}
    ordered = canonical(shuffled)
    assert ordered == shuffled
    stages = [knobs.get(name).stage for name in ordered]
    assert stages == sorted(stages)
    assert list(ordered) == [k.name for k in knobs.all_knobs()]
    assert list(ordered)[0] == "dtype" and list(ordered)[-1] == "compile"


def test_canonical_rejects_unknown_knob():
    with pytest.raises(UnknownKnobError):
        canonical({"dtype": "fp32", "nope": 1})


def test_assignment_key_ignores_key_order():
    a = {"dtype": "fp16", "compile": "none", "attention": "sliced"}
    b = dict(reversed(list(a.items())))
    assert assignment_key(a) == assignment_key(b)
    assert assignment_key(a) != assignment_key({**a, "dtype": "bf16"})


def test_check_available(ctx):
    check_available({"offload": "none", "dtype": "fp16"}, ctx)
    with pytest.raises(InvalidAssignmentError, match="offload"):
        check_available({"offload": "model"}, ctx)


def test_iterating_yields_only_valid_assignments(space):
    seen = list(space)
    assert len(seen) == space.size()
    assert len({assignment_key(a) for a in seen}) == len(seen)
    names = list(space.choices)
    product = [dict(zip(names, values)) for values in itertools.product(*space.choices.values())]
    expected = [a for a in product if not list(knobs.iter_conflicts({**space.default(), **a}))]
    assert len(seen) == len(expected) < len(product)  # vae_dtype=fp32 needs half precision
    for assignment in seen:
        assert set(assignment) == {k.name for k in knobs.all_knobs()}
        assert space.is_valid(assignment)
        assert not list(knobs.iter_conflicts(assignment))
        for name, value in assignment.items():
            assert value in space.choices[name]


def test_size_with_compile_included(ctx, space):
    with_compile = SearchSpace(ctx, include=["compile"])
    assert with_compile.size() == space.size() * len(with_compile.choices["compile"])  # none + 3 compiled modes on cpu
    assert len(with_compile.choices["compile"]) == 4
    assert all(with_compile.is_valid(a) for a in itertools.islice(iter(with_compile), 0, None, 17))


def test_iteration_drops_conflicting_combinations():
    space = SearchSpace(Context(device="cuda", components=TINY_COMPONENTS), include=["compile"])
    seen = list(space)
    assert len(seen) == space.size()
    product = 1
    for values in space.choices.values():
        product *= len(values)
    assert len(seen) < product
    assert not any(a["offload"] == "sequential" and a["compile"] != "none" for a in seen)
    assert any(a["offload"] == "sequential" and a["compile"] == "none" for a in seen)
    assert any(a["offload"] == "model" and a["compile"] == "full" for a in seen)


def test_is_valid_rejects_values_outside_the_space(space):
    assert not space.is_valid({**space.default(), "offload": "model"})
    assert not space.is_valid({**space.default(), "compile": "full"})  # excluded, not searched
    assert not space.is_valid({**space.default(), "dtype": "fp64"})


def test_validate_and_complete(space):
    full = space.complete({"dtype": "bf16"})
    assert full == {**space.default(), "dtype": "bf16"}
    assert list(full) == [k.name for k in knobs.all_knobs()]
    with pytest.raises(UnknownKnobError):
        space.validate({"nope": 1})
    with pytest.raises(InvalidAssignmentError):
        space.complete({"offload": "sequential"})


def test_selectors_that_would_change_nothing_are_errors():
    ctx = Context(device="cpu", components=frozenset({"unet", "vae", "text_encoder"}))
    with pytest.raises(InvalidAssignmentError, match="default is the baseline"):
        SearchSpace(ctx, exclude=["dtype=fp32"])
    with pytest.raises(InvalidAssignmentError, match="offload=model cannot run here: needs an accelerator"):
        SearchSpace(ctx, include=["offload=model"])
    assert SearchSpace(ctx, exclude=["dtype"]).choices["dtype"] == ("fp32",)


# ---- a context with module facts (what autotune.knobs.probe reads off the modules) ---------------

def wan_like_context(device: str = "cuda") -> Context:
    """A 3-D-conv video pipeline whose transformer dispatches attention through diffusers."""
    from autotune.knobs import ModuleFacts

    return Context(
        device=device, components=frozenset({"transformer", "vae", "text_encoder", "tokenizer", "scheduler"}),
        component_classes={"transformer": ("diffusers", "WanTransformer3DModel"), "vae": ("diffusers", "AutoencoderKLWan")},
        modules={
            "transformer": ModuleFacts("WanTransformer3DModel", conv_dims=frozenset({3}), max_tensor_rank=5,
                                       attention_dispatch=True, repeated_blocks=("WanTransformerBlock",)),
            "vae": ModuleFacts("AutoencoderKLWan", conv_dims=frozenset({2, 3}), max_tensor_rank=5,
                               slicing=True, tiling=True),
        },
    )


def test_space_from_module_facts_offers_what_the_modules_can_do():
    space = SearchSpace(wan_like_context())
    assert space.choices["channels_last"] == (False,)
    channels_last = statuses_of(space, "channels_last")[True]
    assert channels_last.state == "unavailable"
    assert "vae (AutoencoderKLWan) has 2-D and 3-D convolutions (rank-5 weights)" in channels_last.reason
    assert "sliced" not in space.choices["attention"]
    assert "attention_backend" in space.searched_knobs
    assert {"native", "_native_flash", "_native_efficient", "_native_cudnn"} <= set(space.choices["attention_backend"])
    assert "regional" in space.choices["compile"]


def test_space_never_pairs_a_half_precision_kernel_with_fp32():
    space = SearchSpace(wan_like_context(), exclude=["offload", "compile", "layerwise_fp8"])
    candidates = list(space)
    assert candidates
    assert any(c["attention_backend"] == "_native_flash" for c in candidates)
    assert not any(c["attention_backend"] == "_native_flash" and c["dtype"] == "fp32" for c in candidates)
    assert not space.is_valid({**space.default(), "attention_backend": "_native_flash"})  # default dtype is fp32


def test_attention_backend_on_cpu_says_cuda():
    space = SearchSpace(wan_like_context("cpu"))
    status = statuses_of(space, "attention_backend")["_native_flash"]
    assert status.state == "unavailable" and "--device cuda" in status.reason
    with pytest.raises(InvalidAssignmentError, match="attention_backend=_native_flash"):
        SearchSpace(wan_like_context("cpu"), include=["attention_backend=_native_flash"])
