"""Every pipeline class of the zoo, from its saved folder, the way a user brings one: a short
search (real worker), a plan, the profile applied, and the same profile applied in another
process giving the same bits. Feeds the table in the README."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.zoo import ZOO_CLASSES, ZOO_NAMES, zoo  # noqa: F401  (zoo: fixture)

from autotune.knobs import all_knobs
from autotune.measure.measurer import SubprocessMeasurer
from autotune.planner import Planner
from autotune.profiles.profile import Profile, ProfileEntry
from autotune.target import Target
from autotune.jobs import finish, space_for, start_search

#: What a user passes for each: its own call arguments, the frames of a video.
OPTIONS = {"pixart": {"call_args": {"use_resolution_binning": False}}, "wan": {"frames": 5}}

#: Applies a profile and saves the output: run in another process, then here.
APPLY_AND_SAVE = """
import sys, numpy as np
from autotune import apply_profile, load_pipeline
from autotune.models.call import call_pipeline, output_array
for profile, out in zip(sys.argv[1::2], sys.argv[2::2]):
    pipe = load_pipeline(profile)
    handle = apply_profile(pipe, profile)
    np.save(out, output_array(call_pipeline(pipe, handle.profile.target, seed=0)))
"""


def target_for(name: str, folder: Path) -> Target:
    return Target(model=str(folder), height=32, width=32, batch=1, steps=2, max_vram=2**31,
                  pipeline_class=ZOO_CLASSES[name], **OPTIONS.get(name, {}))


def exact_profile(name: str, folder: Path, path: Path) -> Path:
    entry = ProfileEntry(settings={k.name: k.default for k in all_knobs()}, latency_median_s=1.0,
                         latency_p90_s=1.0, peak_bytes=1, peak_metric="cpu_live_tensor_peak", runs=1)
    Profile(target=target_for(name, folder), fingerprint={"device": "cpu"}, best=entry).save(path)
    return path


@pytest.fixture(scope="module")
def other_process(zoo, tmp_path_factory):  # noqa: F811
    """Each class's exact profile applied in one other process: name -> (profile, its output)."""
    folder = tmp_path_factory.mktemp("other-process")
    made = {name: (exact_profile(name, zoo[name], folder / f"{name}.yaml"), folder / f"{name}.npy")
            for name in ZOO_NAMES}
    args = [str(p) for pair in made.values() for p in pair]
    subprocess.run([sys.executable, "-c", APPLY_AND_SAVE, *args], check=True, capture_output=True, timeout=300)
    return made


@pytest.fixture(scope="module")
def measurer():
    with SubprocessMeasurer(timeout_s=300) as shared:  # one warm worker for every class
        yield shared


#: The fast tier runs one class end to end; the slow tier (CI runs both) runs every class.
FAST_CLASSES = ("sd",)


@pytest.mark.parametrize("name", [name if name in FAST_CLASSES else pytest.param(name, marks=pytest.mark.slow)
                                  for name in ZOO_NAMES])
def test_search_plan_apply_and_identical_across_processes(name, zoo, measurer, other_process, tmp_path):  # noqa: F811
    from autotune import apply_profile, load_pipeline
    from autotune.models.call import call_pipeline, output_array

    target = target_for(name, zoo[name])
    # fp16 is left out: on CPU it is emulated and ten times slower, nothing this test is about
    search = start_search(target, space=space_for(target, exclude=["dtype=fp16"]), run_dir=tmp_path,
                          measurer=measurer, runs=1, time_cap_s=0.3, confirm=False)
    result = search.run(2)
    assert result.records[0].outcome == "feasible", [r.measurement.error for r in result.records]
    profile = finish(search, result).profile
    assert profile.target.pipeline_class == ZOO_CLASSES[name]
    assert profile.best.quality  # judged against the exact reference

    plan = Planner(target).predict(profile.settings)  # the planner covers every class of the zoo
    assert plan.total_bytes > plan.resident_weights_bytes > 0

    path = profile.save(tmp_path / "profile.yaml")
    handle = apply_profile(load_pipeline(path), path)
    assert {k: v for k, v in handle.applied if k in profile.settings} == profile.settings

    exact_path, elsewhere = other_process[name]
    pipe = load_pipeline(exact_path)
    apply_profile(pipe, exact_path)
    here = output_array(call_pipeline(pipe, target, seed=0))
    assert np.array_equal(here, np.load(elsewhere))
