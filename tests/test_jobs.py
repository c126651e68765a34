"""jobs.py: start a search with SearchOptions; several GPUs on one shared study."""
from __future__ import annotations

import pickle

import pytest
from helpers.fakes import FakeMeasurer
from helpers.searches import MiB, cost, small_space, target

from autotune import jobs
from autotune.errors import InvalidTargetError, StudyError
from autotune.search.options import SearchOptions


def test_start_search_takes_the_options_and_single_overrides(tmp_path):
    search = jobs.start_search(target(), SearchOptions(runs=2), space=small_space(), run_dir=tmp_path,
                               measurer=FakeMeasurer(cost), use_planner=False, confirm=False)
    assert search.options.runs == 2 and not search.options.confirm and search.planner is None
    result = search.run(2)
    assert len(result.records) == 2 and result.stop_reason == "trials"


@pytest.mark.parametrize("text", ["", "0,0", "a,1", ","])
def test_gpus_must_be_distinct_indices(text):
    with pytest.raises(InvalidTargetError, match="distinct GPU indices"):
        jobs.parse_gpus(text)


def test_gpus_parse():
    assert jobs.parse_gpus("0, 1,3") == ["0", "1", "3"]


def test_fan_out_needs_a_shared_study(tmp_path):
    search = jobs.start_search(target(), space=small_space(), run_dir=tmp_path, measurer=FakeMeasurer(cost))
    with pytest.raises(StudyError, match="named study"):
        jobs.run_on_gpus(search, ["0"], run_dir=tmp_path)


def test_a_gpu_job_crosses_to_its_process_whole(tmp_path):
    """Spawned processes get the job pickled: target, options and study, nothing else."""
    job = jobs.GpuJob("1", target(50 * MiB), SearchOptions(confirm=False, trials=3), tmp_path, "s.journal", "study")
    again = pickle.loads(pickle.dumps(job))
    assert again == job and again.log_path == tmp_path / "gpu-1.log"


def test_the_space_leaves_out_what_does_nothing_at_the_target_size():
    from autotune.target import Target

    def states(height: int, batch: int, include: tuple[str, ...] = ()) -> dict[str, str]:
        t = Target(model="builtin:tiny-sd", height=height, width=height, batch=batch, steps=2, max_vram=2**31,
                   device="cpu")
        space = jobs.space_for(t, include=include)
        return {s.knob: s.state for s in space.statuses if s.knob in ("vae_tiling", "vae_slicing") and s.value}

    # the tiny VAE decodes up to 128x128 in one tile; a batch of one has nothing to slice
    assert states(128, 1) == {"vae_tiling": "excluded", "vae_slicing": "excluded"}
    assert states(256, 2) == {"vae_tiling": "searched", "vae_slicing": "searched"}
    assert states(128, 1, include=("vae_tiling", "vae_slicing")) == {"vae_tiling": "searched", "vae_slicing": "searched"}
