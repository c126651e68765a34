"""vae_tiling (autotune/knobs/builtin/vae_tiling.py)."""
from __future__ import annotations

from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs


def check(pipe, value):
    assert pipe.vae.use_tiling is value


test_conformance = conformance("vae_tiling", check)


def test_the_planner_traces_the_vae_tiled_and_tiling_is_lossy():
    from helpers.zoo import build

    vae, knob = build("sd").vae, knobs.get("vae_tiling")
    knob.plan.configure(vae, True)
    assert vae.use_tiling
    knob.plan.configure(vae, False)
    assert not vae.use_tiling
    assert knob.is_lossy(True)
