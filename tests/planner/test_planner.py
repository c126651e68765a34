"""The planner: traces match the CPU tracker, placements compose as documented, the search prunes."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers.modules import Blocks
from helpers.fakes import FakeMeasurer
from helpers.zoo import zoo  # noqa: F401  (session fixture: tiny pipelines saved as folders)

from autotune.measure import worker as _worker
from autotune.measure.backends.cpu import CpuBackend
from autotune.errors import PlannerUnsupportedError
from autotune.knobs import Context, all_knobs
from autotune.measure.measurer import TrialJob
from autotune.planner import Planner, Prediction
from autotune.planner.seeding import seed_order
from autotune.planner.stats import weight_stats
from autotune.knobs.space import SearchSpace
from autotune.search.study import Search
from autotune.target import Target

MiB = 2**20
DEFAULTS = {k.name: k.default for k in all_knobs()}


def tiny(batch=1, device="cpu", ceiling=2**30, size=64) -> Target:
    return Target(model="builtin:tiny-sd", height=size, width=size, batch=batch, steps=2,
                  max_vram=ceiling, device=device)


@pytest.mark.parametrize("settings, batch", [
    ({}, 1),
    # half precision is emulated on CPUs without AVX-512 (15x slower): one such case in the fast tier
    pytest.param({"dtype": "bf16", "layerwise_fp8": True}, 1, marks=pytest.mark.slow),
    pytest.param({"attention": "sliced", "vae_slicing": True}, 2, marks=pytest.mark.slow),
    ({"dtype": "bf16"}, 2),
])
def test_cpu_prediction_is_within_5_percent_of_the_tracker(settings, batch):
    target = tiny(batch=batch, size=128)
    assignment = {**DEFAULTS, **settings}
    predicted = Planner(target).predict(assignment)
    measured = _worker.measure(TrialJob(target, assignment, warmup=0, runs=1), backend=CpuBackend())
    assert measured.peak_bytes > 0
    assert abs(predicted.total_bytes - measured.peak_bytes) / measured.peak_bytes < 0.05
    assert predicted.metric == measured.peak_metric == "cpu_live_tensor_peak"


def test_cpu_predictions_have_no_gpu_terms():
    p = Planner(tiny()).predict(DEFAULTS)
    assert p.workspace_bytes == p.allocator_bytes == p.runtime_bytes == 0
    assert p.total_bytes == p.lower_bound_bytes == p.resident_weights_bytes + p.activation_bytes
    assert p.peak_phase in p.phases and max(p.phases.values()) == p.total_bytes


def test_gpu_prediction_adds_calibrated_terms_and_placement_orders_sensibly():
    planner = Planner(tiny(device="cuda", batch=4, size=256))
    none = planner.predict({**DEFAULTS, "dtype": "fp16"})
    model = planner.predict({**DEFAULTS, "dtype": "fp16", "offload": "model"})
    sequential = planner.predict({**DEFAULTS, "dtype": "fp16", "offload": "sequential"})
    sliced = planner.predict({**DEFAULTS, "dtype": "fp16", "vae_slicing": True})
    fp32 = planner.predict(DEFAULTS)
    assert none.runtime_bytes > 0 and none.workspace_bytes > 0 and none.allocator_bytes > 0
    assert sequential.resident_weights_bytes < model.resident_weights_bytes < none.resident_weights_bytes
    assert sliced.phases["VAE decode"] < none.phases["VAE decode"]  # batch 4: one image at a time
    assert fp32.total_bytes > none.total_bytes
    assert none.lower_bound_bytes < none.total_bytes


@pytest.mark.slow  # 15-30 s on 2 CPU cores: the fast tier keeps under 5 minutes
def test_sdxl_pipeline_decodes_an_fp16_vae_in_fp32():
    planner = Planner(Target(model="builtin:sdxl", height=256, width=256, batch=1, steps=2,
                             max_vram=2**34, device="cuda"))
    fp16 = planner.predict({**DEFAULTS, "dtype": "fp16", "offload": "model"})
    bf16 = planner.predict({**DEFAULTS, "dtype": "bf16", "offload": "model"})
    fp32 = planner.predict({**DEFAULTS, "offload": "model"})
    assert fp16.phases["VAE decode"] == fp32.phases["VAE decode"]
    assert bf16.phases["VAE decode"] < fp16.phases["VAE decode"]


def test_layerwise_fp8_stores_cast_layers_in_one_byte():
    planner = Planner(tiny())
    plain = planner.predict({**DEFAULTS, "dtype": "bf16", "offload": "model"})
    cast = planner.predict({**DEFAULTS, "dtype": "bf16", "offload": "model", "layerwise_fp8": True})
    assert cast.phases["denoiser step"] < plain.phases["denoiser step"]


def test_unsupported_pipeline_is_refused_saying_why(monkeypatch):
    from autotune.models import pipelines

    info = pipelines.model_info("builtin:tiny-sd")
    classes = {"transformer": ("diffusers", "LTXVideoTransformer3DModel"), "vae": ("diffusers", "AutoencoderKL"),
               "text_encoder": ("transformers", "CLIPTextModel")}
    monkeypatch.setattr(pipelines, "model_info", lambda m: dataclasses.replace(
        info, components=frozenset(classes), component_classes=classes))
    with pytest.raises(PlannerUnsupportedError, match="its transformer is a LTXVideoTransformer3DModel .traced: "
                                                      "UNet2DConditionModel, PixArtTransformer2DModel"):
        Planner(tiny())
    del classes["vae"]
    with pytest.raises(PlannerUnsupportedError, match="a denoiser .unet or transformer. and a vae"):
        Planner(tiny())


def test_weight_stats_mirror_diffusers_grouping():
    s = weight_stats(Blocks())
    assert s.total == 80 + 3 * 288 + 64 + 8
    assert s.largest_leaf == 288 and s.non_leaf == 8
    assert s.block_unmatched == 80 + 64 + 8 and s.largest_block == 288
    assert weight_stats(Blocks(), blocks_per_group=2).largest_block == 2 * 288
    # group offload with N blocks per group: runs of N consecutive blocks, the last one shorter
    assert s.block_sizes == ((288, 288, 288),)
    assert s.largest_group(2) == 2 * 288 and s.largest_group(4) == 3 * 288
    assert s.largest_upcast_layer == 0


def test_weights_a_knob_stores_narrower_count_at_their_width_and_upcast_one_layer():
    narrow = weight_stats(Blocks(), storage={"blocks.1.weight": 2, "blocks.1.bias": 2})
    assert narrow.total == 80 + 2 * 288 + (64 + 8) * 2 + 64 + 8
    assert narrow.largest_upcast_layer == 288  # blocks.1 back at full width while it runs


def test_seed_order_spreads_over_offload_and_dtype_fastest_first():
    candidates = [{**DEFAULTS, "dtype": d, "offload": o, "vae_slicing": s}
                  for d in ("fp32", "fp16") for o in ("none", "model", "sequential") for s in (False, True)]
    order = seed_order(candidates, "cuda", k=4)
    assert [(a["offload"], a["dtype"]) for a in order] == [("none", "fp16"), ("none", "fp32"),
                                                           ("model", "fp16"), ("model", "fp32")]
    assert not any(a["vae_slicing"] for a in order)
    assert seed_order(candidates, "cpu", k=1)[0]["dtype"] == "fp32"


class StubPlanner:
    """Predicts 10 MiB for fp32, 4 MiB otherwise; lower bound 90% of that."""

    def __init__(self):
        self.calls = 0

    def predict(self, a):
        self.calls += 1
        total = (10 if a["dtype"] == "fp32" else 4) * MiB
        return Prediction(total_bytes=total, peak_phase="VAE decode", resident_weights_bytes=total * 6 // 10,
                          activation_bytes=total * 3 // 10, workspace_bytes=total // 10, allocator_bytes=0,
                          runtime_bytes=0, phases={"VAE decode": total}, metric="fake_peak")


def test_search_prunes_predicted_infeasible_and_stores_predictions(tmp_path):
    ctx = Context(device="cpu", components=frozenset({"unet", "vae", "text_encoder"}))
    space = SearchSpace(ctx, exclude=["layerwise_fp8", "channels_last", "attention", "vae_tiling", "vae_dtype"])
    fake = FakeMeasurer(lambda a: (1.0 if a["dtype"] == "fp32" else 2.0, 1 * MiB))
    search = Search(tiny(ceiling=6 * MiB), space, fake, storage=tmp_path / "s.journal", planner=StubPlanner())
    result = search.run(10)
    assert all(j.assignment["dtype"] != "fp32" for j in fake.jobs)   # never measured
    assert {r.assignment["dtype"] for r in result.pruned} == {"fp32"} and len(result.pruned) == 2
    assert len(result.records) == 4                                    # space exhausted: 6 = 4 + 2
    assert all(r.prediction.total_bytes == 4 * MiB for r in result.records)
    # The fp32 baseline was pruned; the first seed measured is the CPU prior's favourite half dtype.
    assert fake.jobs[0].assignment["dtype"] == "bf16"
    resumed = Search(tiny(ceiling=6 * MiB), space, FakeMeasurer(), storage=tmp_path / "s.journal",
                     planner=StubPlanner(), resume=True)
    assert len(resumed.result().pruned) == 2 and len(resumed.result().records) == 4


# ---- local folders (the zoo): configs from the folder, numbers that match it ---------------------

def safetensors_bytes(folder, dtype_bytes: int) -> int:
    """Bytes of every tensor the folder stores, floating ones counted at `dtype_bytes` each."""
    from safetensors import safe_open

    total = 0
    for path in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            for key in handle.keys():
                tensor = handle.get_slice(key)
                numel = 1
                for dim in tensor.get_shape():
                    numel *= dim
                floating = tensor.get_dtype() in ("F32", "F16", "BF16", "F64")
                total += numel * (dtype_bytes if floating else torch.empty(0, dtype=_DTYPES[tensor.get_dtype()]).element_size())
    return total


_DTYPES = {"I64": torch.int64, "I32": torch.int32, "BOOL": torch.bool, "U8": torch.uint8}


def plan_json(capsys, folder, *extra) -> dict:
    import json

    from autotune.cli.main import main

    assert main(["plan", "--model", str(folder), "--device", "cpu", "--json", "--steps", "2", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow  # 25 s: it plans and measures the folder's pipeline
def test_plan_of_a_local_folder_weighs_its_safetensors_and_predicts_the_cpu_tracker(zoo, capsys):  # noqa: F811
    folder = zoo["sd"]
    out = plan_json(capsys, folder, "--height", "64", "--width", "64", "--batch", "2")
    assert (out["target"]["height"], out["target"]["width"]) == (64, 64)
    plans = {p["settings"]["dtype"]: p for p in out["plans"]
             if {k: v for k, v in p["settings"].items() if k != "dtype"} == {k: v for k, v in DEFAULTS.items() if k != "dtype"}}
    for dtype, size in (("fp32", 4), ("bf16", 2), ("fp16", 2)):
        stored = safetensors_bytes(folder, size)
        assert abs(plans[dtype]["resident_weights_bytes"] - stored) / stored < 0.02, dtype
    target = Target(model=str(folder), height=64, width=64, batch=2, steps=2, max_vram=2**30, device="cpu")
    measured = _worker.measure(TrialJob(target, DEFAULTS, warmup=0, runs=1), backend=CpuBackend())
    assert measured.status == "ok", measured.error
    assert abs(plans["fp32"]["total_bytes"] - measured.peak_bytes) / measured.peak_bytes < 0.10


def test_plan_of_a_folder_defaults_to_its_native_size(zoo, capsys):  # noqa: F811
    out = plan_json(capsys, zoo["sd"])
    assert (out["target"]["height"], out["target"]["width"]) == (64, 64)  # 8 latent x 8, not 512


def test_fake_components_are_built_from_the_folders_configs(zoo):  # noqa: F811
    from diffusers import DiffusionPipeline
    from torch._subclasses.fake_tensor import FakeTensorMode

    from autotune.planner.fake import fake_components

    for name in ("sd", "sdxl", "pixart", "wan"):
        real = DiffusionPipeline.from_pretrained(zoo[name])
        fake = fake_components(str(zoo[name]), torch.float32, FakeTensorMode(allow_non_fake_inputs=True))
        assert set(fake) == {n for n in ("text_encoder", "text_encoder_2", "unet", "transformer", "vae")
                             if getattr(real, n, None) is not None}
        for component, module in fake.items():
            assert (sum(p.numel() for p in module.parameters())
                    == sum(p.numel() for p in getattr(real, component).parameters())), (name, component)


# ---- transformer pipelines: DiT (PixArt) and video (Wan) ------------------------------------------

ZOO_CALLS = {"pixart": {"use_resolution_binning": False}, "wan": {}}


def tracked_peak(folder, name, size, batch, frames=None) -> int:
    """The CPU tracker's peak over one real call of the pipeline (what the CPU backend measures)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(ZOO_CALLS.get(name, {}), height=size, width=size, num_inference_steps=2, output_type="np",
                  generator=torch.Generator("cpu").manual_seed(0))
    kwargs.update({"num_frames": frames, "num_videos_per_prompt": batch} if frames else {"num_images_per_prompt": batch})
    with CpuBackend().track(pipe) as reading:
        pipe("a red fox", **kwargs)
    return reading.peak_bytes


@pytest.mark.parametrize("name, size, batch, frames", [("pixart", 128, 2, None), ("wan", 32, 1, 5),
                                                       ("sd3", 128, 2, None), ("flux", 128, 2, None)])
def test_transformer_pipeline_prediction_is_within_5_percent_of_the_tracker(zoo, name, size, batch, frames):  # noqa: F811
    target = Target(model=str(zoo[name]), height=size, width=size, batch=batch, steps=2, max_vram=2**30,
                    device="cpu", frames=frames)
    predicted = Planner(target).predict(DEFAULTS)
    measured = tracked_peak(zoo[name], name, size, batch, frames)
    assert abs(predicted.total_bytes - measured) / measured < 0.05
    assert {"text encoder", "denoiser step", "VAE decode"} <= set(predicted.phases)  # SD3: text encoders 2, 3 too


def test_video_frames_and_t5_tokens_reach_the_traces(zoo):  # noqa: F811
    def phases(frames, **call_args):
        target = Target(model=str(zoo["wan"]), height=32, width=32, batch=1, steps=2, max_vram=2**30,
                        device="cpu", frames=frames, call_args=call_args)
        return Planner(target).predict(DEFAULTS).phases

    base = phases(5)
    longer = phases(17)
    assert longer["VAE decode"] > base["VAE decode"] and longer["denoiser step"] > base["denoiser step"]
    assert longer["text encoder"] == base["text encoder"]
    short = phases(5, max_sequence_length=64)          # Wan's default is 512 tokens
    assert short["text encoder"] < base["text encoder"] / 4


def test_block_offload_groups_a_transformer_as_diffusers_does(zoo):  # noqa: F811
    from diffusers import DiffusionPipeline
    from torch._subclasses.fake_tensor import FakeTensorMode

    from autotune.planner.fake import fake_components

    real = DiffusionPipeline.from_pretrained(zoo["wan"]).transformer
    fake = fake_components(str(zoo["wan"]), torch.float32, FakeTensorMode(allow_non_fake_inputs=True))["transformer"]
    stats = weight_stats(fake)
    nbytes = lambda m: sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])  # noqa: E731
    assert stats.total == nbytes(real)
    assert stats.largest_block == max(nbytes(b) for b in real.blocks)                 # one WanTransformerBlock
    assert stats.block_unmatched == nbytes(real) - sum(nbytes(b) for b in real.blocks)
    planner = Planner(Target(model=str(zoo["wan"]), height=32, width=32, batch=1, steps=2, max_vram=2**30,
                             device="cuda", frames=5))
    none = planner.predict({**DEFAULTS, "offload": "none"})
    block = planner.predict({**DEFAULTS, "offload": "group-block-1"})
    # while the transformer runs, block offload keeps its unmatched modules and one block, nothing else
    assert (none.phases["denoiser step"] - block.phases["denoiser step"]
            == none.resident_weights_bytes - (stats.block_unmatched + stats.largest_block))


def _offload_groups(component: torch.nn.Module) -> tuple[list[int], int]:
    """The groups diffusers' group offload hooks hold on `component`: the bytes of each block
    group, sorted, and of its unmatched groups together (a tensor in two of them once)."""
    groups = {}
    for module in component.modules():
        registry = getattr(module, "_diffusers_hook", None)
        for hook in (registry.hooks.values() if registry is not None else ()):
            if getattr(hook, "group", None) is not None:
                groups[id(hook.group)] = hook.group

    def tensors(group) -> dict[int, torch.Tensor]:
        held = [t for m in group.modules for t in [*m.parameters(), *m.buffers()]] + [*group.parameters, *group.buffers]
        return {id(t): t for t in held}

    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts.values())  # noqa: E731
    blocks = sorted(nbytes(tensors(g)) for g in groups.values() if g.offload_leader in g.modules)
    unmatched: dict[int, torch.Tensor] = {}
    for g in groups.values():
        if g.offload_leader not in g.modules:  # led by the level it belongs to, not by a block
            unmatched.update(tensors(g))
    return blocks, nbytes(unmatched)


@pytest.mark.parametrize("name", ["flux", "sdxl", "wan"])
def test_block_offload_groups_every_component_as_diffusers_hooks_it(name):
    """The planner's groups against the hooks diffusers installs for the offload knob's
    group-block-1 (cpu to cpu), component by component: the VAE's encoder and decoder split by
    their own `_group_offload_block_modules`, the text encoders (CLIP, CLIP with projection, T5,
    UMT5) by their layers, which diffusers alone would move whole."""
    from helpers.zoo import build

    from autotune.knobs import ApplyContext, get

    pipe = build(name)
    modules = {n: c for n, c in pipe.components.items() if isinstance(c, torch.nn.Module)}
    stats = {n: weight_stats(c) for n, c in modules.items()}
    get("offload").apply(pipe, "group-block-1", ApplyContext("cpu"))
    for component, module in modules.items():
        blocks, unmatched = _offload_groups(module)
        assert blocks == sorted(b for sizes in stats[component].block_sizes for b in sizes), component
        assert unmatched == stats[component].block_unmatched, component
        if component.startswith("text_encoder"):  # in blocks: its largest group is far below the whole
            assert stats[component].largest_group(1) + unmatched < stats[component].total


@pytest.mark.parametrize("name, component", [("flux", "text_encoder_2"), ("wan", "text_encoder")])
def test_a_tied_weight_counts_once_as_in_the_loaded_model(zoo, name, component):  # noqa: F811
    """T5's and UMT5's encoders hold one embedding under two modules (`shared` and
    `encoder.embed_tokens`): the loaded model keeps one tensor, and so must the weight count
    (for Wan's UMT5-XXL the second copy would be 2 GiB in 16-bit)."""
    from diffusers import DiffusionPipeline
    from torch._subclasses.fake_tensor import FakeTensorMode

    from autotune.planner.fake import fake_components

    real = getattr(DiffusionPipeline.from_pretrained(zoo[name]), component)
    assert real.shared.weight is real.encoder.embed_tokens.weight
    fake = fake_components(str(zoo[name]), torch.float32, FakeTensorMode(allow_non_fake_inputs=True))[component]
    nbytes = sum(t.numel() * t.element_size() for t in [*real.parameters(), *real.buffers()])
    stats = weight_stats(fake)
    assert stats.total == stats.loaded_bytes == nbytes
    assert stats.block_unmatched + sum(map(sum, stats.block_sizes)) == nbytes


def test_the_peak_phase_is_chosen_with_the_allocator_cache_it_brings():
    """A text encoder on the device whole (10 GiB of weights, few activations) against a
    denoiser step with 8 GiB of activations: with the allocator's cache of those, the step is
    the peak (Wan 2.1 14B under block offload was predicted 11.5 GiB, from the text encoder,
    where the step with its cache comes to 14.6)."""
    from autotune.planner.placement import PhaseCost, peak_phase

    GiB = 2**30
    encoder = PhaseCost("text_encoder", 10 * GiB, GiB // 2, 0)
    step = PhaseCost("transformer", 1 * GiB, 8 * GiB, 0)
    assert encoder.total > step.total
    peak, cached = peak_phase([encoder, step], 0.6)
    assert peak is step and cached == int(0.6 * 8 * GiB)
    assert peak_phase([encoder, step], 0.0) == (encoder, 0)  # on CPU: no cache, the larger total
