"""offload (autotune/knobs/builtin/offload.py)."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.knob_conformance import baseline_images, conformance, run  # noqa: F401  (fixture)

from autotune import knobs
from autotune.knobs.settings import hooked_modules
from autotune.knobs import ApplyContext, Context
from autotune.knobs.builtin.offload import Offload, host_bytes, resident_bytes
from autotune.planner.stats import WeightStats


def check(pipe, value):
    assert value == "none"  # the only offload value available on cpu
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        assert all(p.device.type == "cpu" for p in module.parameters())
    assert hooked_modules(pipe) == []


test_conformance = conformance("offload", check)


@pytest.mark.parametrize("value", ["group-block-1", "group-leaf"])
def test_group_offload_applies_mechanically_on_cpu(tiny_pipe, baseline_images, value):
    assert hooked_modules(tiny_pipe) == []
    knobs.get("offload").apply(tiny_pipe, value, ApplyContext("cpu"))
    hooked = hooked_modules(tiny_pipe)
    assert any(h.startswith("unet") for h in hooked)
    assert any(h.startswith("vae") for h in hooked)
    # cpu -> cpu group offload changes where weights wait, not the numbers
    np.testing.assert_allclose(run(tiny_pipe), baseline_images, atol=1e-3, rtol=0)


def test_block_offload_moves_a_t5_encoder_block_by_block_and_changes_no_number():
    """diffusers' pipeline-level group offload moves a transformers text encoder whole (T5-XXL:
    9 GiB, over an 8 GB card by itself); the knob groups its blocks like the denoiser's."""
    from helpers.zoo import build, run as run_zoo

    pipe = build("flux")
    before = run_zoo(pipe, "flux")
    knobs.get("offload").apply(pipe, "group-block-1", ApplyContext("cpu"))
    hooked = hooked_modules(pipe)
    assert {"text_encoder_2.encoder.block.0", "text_encoder_2.encoder.block.1"} <= set(hooked)
    assert "text_encoder.encoder.layers.0" in hooked and "transformer.transformer_blocks.0" in hooked
    np.testing.assert_array_equal(run_zoo(pipe, "flux"), before)


def test_group_leaf_hooks_more_modules_than_block(tiny_pipe):
    from autotune.models.pipelines import build_pipeline

    other = build_pipeline("builtin:tiny-sd")
    knobs.get("offload").apply(tiny_pipe, "group-block-1", ApplyContext("cpu"))
    knobs.get("offload").apply(other, "group-leaf", ApplyContext("cpu"))
    assert len(hooked_modules(other)) > len(hooked_modules(tiny_pipe))
    assert "unet.conv_in" in hooked_modules(other)


def test_a_mode_is_parsed_once_into_diffusers_group_offload_arguments():
    assert Offload.parse("group-block-1-stream").group_offload_kwargs("cuda") == {
        "onload_device": "cuda", "offload_device": "cpu", "offload_type": "block_level",
        "use_stream": True, "num_blocks_per_group": 1}
    assert Offload.parse("group-leaf") == Offload("group", "leaf_level", None, False)
    assert Offload.parse("model") == Offload("model")
    for bad in ("teleport", "group-block-x", "group-leaf-2", "group"):
        with pytest.raises(ValueError, match="unknown offload mode"):
            Offload.parse(bad)
    for value in knobs.get("offload").choices:
        Offload.parse(value)


def test_apply_rejects_an_unknown_mode(tiny_pipe):
    with pytest.raises(ValueError):
        knobs.get("offload").apply(tiny_pipe, "teleport", ApplyContext("cpu"))


def test_group_offload_values_parse_into_diffusers_arguments():
    assert Offload.parse("group-block-4").group_offload_kwargs("cuda") == {
        "onload_device": "cuda", "offload_device": "cpu", "offload_type": "block_level", "use_stream": False,
        "num_blocks_per_group": 4}
    assert Offload.parse("group-block-1-stream").group_offload_kwargs("cuda") == {
        "onload_device": "cuda", "offload_device": "cpu", "offload_type": "block_level", "use_stream": True,
        "num_blocks_per_group": 1}


def test_a_streamed_group_of_several_blocks_is_refused_as_diffusers_makes_it_one():
    """diffusers' block-level group offload sets num_blocks_per_group=1 whenever it has a stream
    (warning "Using streams is only supported for num_blocks_per_group=1"): such a value would be
    group-block-1-stream under another name, planned with four blocks it never moves together."""
    import inspect

    from diffusers.hooks import group_offloading

    source = inspect.getsource(group_offloading._apply_group_offloading_block_level)
    assert "config.stream is not None and config.num_blocks_per_group != 1" in source
    with pytest.raises(ValueError, match="use group-block-1-stream"):
        Offload.parse("group-block-4-stream")
    assert not any(v.startswith("group-block-") and v.endswith("-stream") and v != "group-block-1-stream"
                   for v in knobs.get("offload").choices)


def test_lowmem_group_offload_pins_each_group_as_it_moves():
    assert Offload.parse("group-block-1-stream-lowmem").group_offload_kwargs("cuda") == {
        "onload_device": "cuda", "offload_device": "cpu", "offload_type": "block_level", "use_stream": True,
        "num_blocks_per_group": 1, "low_cpu_mem_usage": True}
    assert "low_cpu_mem_usage" not in Offload.parse("group-block-1-stream").group_offload_kwargs("cuda")
    for bad in ("group-block-1-lowmem", "group-lowmem", "model-stream-lowmem"):
        with pytest.raises(ValueError):
            Offload.parse(bad)


def test_host_ram_per_offload_mode_counts_weights_as_loaded():
    """Loading puts every weight in RAM first (narrower storage comes after); a streamed group
    offload pins a second copy at setup, or with low_cpu_mem_usage one group at a time."""
    stats = {"unet": WeightStats(total=500, largest_leaf=50, non_leaf=10, block_unmatched=200,
                                 largest_block=300, largest_upcast_layer=0, block_sizes=((300, 100),),
                                 as_loaded=1000),  # stored narrower (fp8): loaded at twice that
             "vae": WeightStats(total=100, largest_leaf=20, non_leaf=0, block_unmatched=100,
                                largest_block=0, largest_upcast_layer=0)}
    expected = {"none": 1100, "model": 1100, "sequential": 1100, "group-block-1": 1100, "group-leaf": 1100,
                "group-block-1-stream": 2200, "group-leaf-stream": 2200,
                "group-block-1-stream-lowmem": 1100 + 300}
    assert {v: host_bytes(v, stats) for v in expected} == expected
    assert knobs.get("offload").plan.host is host_bytes
    assert set(expected) | {"group-block-4"} == set(knobs.get("offload").choices)


def test_streamed_offload_needs_cuda():
    cuda = Context(device="cuda", components=frozenset({"unet", "vae"}))
    assert knobs.get("offload").reason_unavailable("group-leaf-stream", cuda) is None
    assert knobs.get("offload").reason_unavailable("group-leaf-stream", Context("cpu", cuda.components))


def test_resident_weights_per_offload_mode():
    stats = {"unet": WeightStats(total=1000, largest_leaf=50, non_leaf=10, block_unmatched=200,
                                 largest_block=300, largest_upcast_layer=0,
                                 block_sizes=((300, 100, 100, 50, 250), (40,))),
             "vae": WeightStats(total=100, largest_leaf=20, non_leaf=0, block_unmatched=100,
                                largest_block=0, largest_upcast_layer=0)}
    expected = {"none": 1100, "model": 1000, "sequential": 50, "group-block-1": 500, "group-block-1-stream": 800,
                "group-block-4": 200 + 550,  # blocks 0-3 move together
                "group-leaf": 60, "group-leaf-stream": 110}
    assert {v: resident_bytes(v, "unet", stats) for v in expected} == expected
    assert knobs.get("offload").plan.resident is resident_bytes
    with pytest.raises(ValueError):
        resident_bytes("disk", "unet", stats)


def test_weights_on_the_device_are_the_fastest_prior_and_offload_spreads_the_seeds():
    offload = knobs.get("offload")
    ranks = {v: offload.speed_rank(v, "cuda") for v in offload.choices}
    assert ranks["none"] == min(ranks.values()) and ranks["sequential"] == max(ranks.values())
    assert offload.speed.spread
