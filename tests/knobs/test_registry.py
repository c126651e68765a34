"""The knob registry (autotune/knobs/registry.py, knobs/__init__.py): every knob is one module of
autotune/knobs/builtin with its own conformance test here (tests/knobs/test_<knob>.py), well
formed, ordered, and available where its modules say."""
from __future__ import annotations

import dataclasses
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.knob_conformance import baseline_images, run  # noqa: F401  (fixture)

from autotune import knobs
from autotune.knobs.settings import apply_settings, hooked_modules
from autotune.errors import InvalidAssignmentError, UnknownKnobError
from autotune.knobs import Context, Knob, Stage
from autotune.knobs.registry import ROLES
from helpers.zoo import zoo  # noqa: F401  (the session fixture of saved tiny pipelines)

HERE = Path(__file__).parent


def test_defaults_reproduce_baseline_exactly(tiny_pipe, baseline_images):
    apply_settings(tiny_pipe, {}, device="cpu")
    np.testing.assert_array_equal(run(tiny_pipe), baseline_images)


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
    assert knob.plan.roles <= ROLES
    for device in ("cpu", "cuda"):
        assert all(isinstance(knob.speed_rank(v, device), int) for v in knob.choices)
    assert isinstance(knob.load_kwargs(knob.default), dict)
    assert knob.compiles <= set(knob.choices) and knob.process_state <= set(knob.choices)


# ---- a knob is one module ------------------------------------------------------------------------

BUILTIN_MODULES = sorted(m.name for m in pkgutil.iter_modules(knobs._builtin.__path__))


@pytest.mark.parametrize("module", BUILTIN_MODULES)
def test_each_builtin_module_is_one_knob_of_its_name_with_its_conformance_test(module):
    registered = [k for k in knobs.all_knobs() if k.apply.__module__ == f"autotune.knobs.builtin.{module}"]
    assert [k.name for k in registered] == [module]
    test_file = HERE / f"test_{module}.py"
    assert test_file.is_file(), f"{module} has no conformance test {test_file.name}"
    assert f'conformance("{module}"' in test_file.read_text()


def test_every_registered_knob_comes_from_a_builtin_module():
    assert sorted(k.name for k in knobs.all_knobs()) == BUILTIN_MODULES


def test_no_knob_name_is_spelled_out_outside_the_knobs():
    """A knob is one file: the rest of autotune asks the registry (load_kwargs, compiles, plan
    effects, speed prior) instead of naming a knob. A line that must name one says why, with a
    `# not a knob` or `# the knob on purpose` comment."""
    import re

    package = Path(knobs.__file__).parent.parent
    pattern = re.compile(rf"""["'](?:{"|".join(BUILTIN_MODULES)})["']""")
    found = []
    for path in sorted(package.rglob("*.py")):
        if "knobs" in path.relative_to(package).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and "# not a knob" not in line and "# the knob on purpose" not in line:
                found.append(f"{path.relative_to(package)}:{number}: {line.strip()}")
    assert found == [], "knob names spelled out outside autotune/knobs:\n" + "\n".join(found)


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


def test_all_knobs_in_stage_order_and_each_after_what_it_names():
    ordered = knobs.all_knobs()
    stages = [k.stage for k in ordered]
    assert stages == sorted(stages)
    position = {k.name: i for i, k in enumerate(ordered)}
    for knob in ordered:
        assert all(position[a] < position[knob.name] for a in knob.after if a in position)
        assert all(position[b] > position[knob.name] for b in knob.before if b in position)


def test_all_knobs_sees_a_knob_replaced_or_removed_after_it_was_ordered(monkeypatch):
    from autotune.knobs import registry

    before = knobs.all_knobs()
    swapped = dataclasses.replace(registry.get("vae_tiling"), help="swapped")
    monkeypatch.setitem(registry._KNOBS, "vae_tiling", swapped)
    assert any(k is swapped for k in knobs.all_knobs())
    monkeypatch.delitem(registry._KNOBS, "vae_tiling")
    assert [k.name for k in knobs.all_knobs()] == [k.name for k in before if k.name != "vae_tiling"]


def test_an_ordering_cycle_is_refused():
    from autotune.knobs import registry

    a = Knob(name="_cycle_a", choices=(False, True), default=False, stage=Stage.TUNE, help="x",
             apply=lambda pipe, value, ctx: None, after=("_cycle_b",))
    b = dataclasses.replace(a, name="_cycle_b", after=("_cycle_a",))
    try:
        knobs.register(a)
        knobs.register(b)
        with pytest.raises(ValueError, match="cycle"):
            knobs.all_knobs()
    finally:
        registry._KNOBS.pop("_cycle_a", None)
        registry._KNOBS.pop("_cycle_b", None)


def test_conflicts_reference_known_values():
    assert knobs.conflicts()
    knobs.check_conflicts()
    for conflict in knobs.conflicts():
        assert conflict.values_a <= set(knobs.get(conflict.knob_a).choices)
        assert conflict.values_b <= set(knobs.get(conflict.knob_b).choices)
        assert conflict.reason.strip()


def test_a_conflict_naming_a_value_a_knob_lacks_is_a_bug_found_at_import():
    from autotune.knobs import registry

    bad = knobs.Conflict("dtype", frozenset({"fp64"}), "offload", frozenset({"model"}), "typo")
    registry._CONFLICTS.append(bad)
    try:
        with pytest.raises(ValueError, match="fp64"):
            knobs.check_conflicts()
    finally:
        registry._CONFLICTS.remove(bad)


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
    from helpers.zoo import build

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
    from helpers.zoo import build

    from autotune.knobs.probe import model_context, pipeline_context

    folder = str(zoo["wan"])
    assert model_context(folder, "cuda").modules == pipeline_context(build("wan"), "cuda").modules
