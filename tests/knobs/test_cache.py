"""cache (autotune/knobs/builtin/cache.py): FirstBlockCache where the denoiser has diffusers'
caching hooks and the pipeline enters its cache context; the SD UNet of the conformance pipeline
has none, so there every threshold must say why."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)
from helpers.zoo import ZOO_CLASSES, zoo  # noqa: F401  (the session fixture of saved tiny pipelines)

from autotune import knobs
from autotune.knobs import Context
from autotune.knobs.builtin.cache import THRESHOLDS
from autotune.knobs.probe import model_context


def check(pipe, value):  # only "none" runs on the SD UNet
    assert not getattr(pipe.unet, "is_cache_enabled", False)


test_conformance = conformance("cache", check)


def test_offered_where_the_denoiser_has_the_hooks_and_the_pipeline_their_context(zoo):  # noqa: F811
    knob = knobs.get("cache")
    for name in ("flux", "wan"):
        ctx = model_context(str(zoo[name]), "cpu")
        assert ctx.pipeline_class == ZOO_CLASSES[name]
        assert all(knob.reason_unavailable(v, ctx) is None for v in THRESHOLDS)
    for name in ("sd", "sd3", "pixart"):  # the UNet, SD3's and PixArt's transformers: no CacheMixin
        reason = knob.reason_unavailable("first-block-0.08", model_context(str(zoo[name]), "cpu"))
        assert reason and "no caching hooks" in reason


def test_a_pipeline_that_never_enters_the_cache_context_is_refused():
    ctx = Context(device="cuda", components=frozenset({"transformer", "vae"}),
                  component_classes={"transformer": ("diffusers", "FluxTransformer2DModel")},
                  pipeline_class="StableDiffusionPipeline")  # its __call__ has no cache_context
    assert "never enters the denoiser's cache context" in knobs.get("cache").reason_unavailable("first-block-0.05", ctx)


@pytest.mark.slow  # two real-worker searches, ~2.5 min on 2 cores: CI's slow tier
@pytest.mark.parametrize("name", ["flux", "wan"])
def test_a_search_measures_the_cache_judges_it_and_the_profile_reapplies_it(name, zoo, tmp_path):  # noqa: F811
    """On the zoo's Flux and Wan folders: a real-worker search over the cache thresholds, each
    trial judged against the exact reference, and the winner's profile applied to a freshly
    loaded pipeline gives the same bits twice (the cache decides the same way every run)."""
    from autotune import apply_profile, load_pipeline
    from autotune.models.call import call_pipeline, output_array
    from autotune.measure.measurer import SubprocessMeasurer
    from autotune.target import Target
    from autotune.jobs import finish, space_for, start_search

    target = Target(model=str(zoo[name]), height=32, width=32, batch=1, steps=4, max_vram=2**31,
                    pipeline_class=ZOO_CLASSES[name], **({"frames": 5} if name == "wan" else {}))
    others = [k.name for k in knobs.all_knobs() if k.name != "cache"]
    with SubprocessMeasurer(timeout_s=300) as measurer:
        search = start_search(target, space=space_for(target, exclude=others), run_dir=tmp_path,
                              measurer=measurer, runs=1, time_cap_s=0.3, confirm=False)
        result = search.run(1 + len(THRESHOLDS))
    measured = {r.assignment.get("cache") for r in result.records if r.outcome == "feasible"}
    assert measured == {"none", *THRESHOLDS}, [(r.assignment, r.outcome, r.measurement.error) for r in result.records]
    judged = [r for r in result.records if r.assignment.get("cache") in THRESHOLDS]
    assert all(r.measurement.quality for r in judged)  # each threshold judged against the reference

    profile_path = tmp_path / "profile.yaml"
    profile = finish(search, result).profile
    profile.best.settings["cache"] = "first-block-0.12"  # the boldest, whatever won on this CPU
    profile.save(profile_path)
    outputs = []
    for _ in range(2):
        pipe = load_pipeline(str(profile_path))
        handle = apply_profile(pipe, str(profile_path))
        assert pipe.transformer.is_cache_enabled
        outputs.append(output_array(call_pipeline(pipe, handle.profile.target, seed=0)))
    assert np.isfinite(outputs[0]).all()
    np.testing.assert_array_equal(outputs[0], outputs[1])
