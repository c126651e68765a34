"""benchmarks/space_size.py and the configs it plans (benchmarks/configs/: FLUX.1-dev and Wan 2.1
as published, configs only)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
GiB = 2**30


@pytest.fixture(scope="module")
def space_size():
    spec = importlib.util.spec_from_file_location("space_size", BENCHMARKS / "space_size.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["space_size"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("folder, billions, within", [
    ("flux.1-dev", 12.0, 0.01),        # "a 12 billion parameter rectified flow transformer"
    ("wan2.1-t2v-14b", 14.0, 0.03),
    ("wan2.1-t2v-1.3b", 1.3, 0.10),    # 1.42 B counted: the model card rounds it to 1.3B
])
def test_each_config_builds_the_denoiser_its_model_card_names(folder, billions, within):
    """A typo in a config (a layer count, a width) would plan another model: the denoiser built
    from it on the meta device has the parameter count its model card states."""
    import diffusers
    from accelerate import init_empty_weights

    from autotune.models.pipelines import load_configs, model_info

    path = str(BENCHMARKS / "configs" / folder)
    info = model_info(path)
    configs = load_configs(path, names=("transformer",))
    with init_empty_weights():
        model = getattr(diffusers, info.component_classes["transformer"][1]).from_config(configs["transformer"])
    count = sum(p.numel() for p in model.parameters()) / 1e9
    assert count == pytest.approx(billions, rel=within)


@pytest.mark.slow  # ~15 s of fake-tensor traces
def test_it_counts_what_the_planner_gate_prunes_and_reports_it(space_size):
    result = space_size.measure(space_size.MODELS["flux.1-dev"], [8 * GiB, 24 * GiB], [32 * GiB])
    tight, roomy = result["ceilings"]
    for row in result["ceilings"]:
        assert row["pruned"] + row["left"] == result["candidates"] > 0
        assert 0 < row["predicted_to_fit"] <= row["left"]
        assert row["max_ram"][str(32 * GiB)] <= row["left"]
    assert tight["left"] < roomy["left"]  # a lower ceiling prunes more
    text = space_size.report([result], [32 * GiB])
    assert "## flux.1-dev (FluxPipeline, 1024x1024)" in text
    assert f"| 8.00 GiB | {tight['pruned']} | {tight['left']} | {tight['predicted_to_fit']} |" in text
