"""vae_slicing (autotune/knobs/builtin/vae_slicing.py)."""
from __future__ import annotations

from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs


def check(pipe, value):
    assert pipe.vae.use_slicing is value


test_conformance = conformance("vae_slicing", check)


def test_the_planner_traces_the_vae_sliced():
    from helpers.zoo import build

    vae, plan = build("sd").vae, knobs.get("vae_slicing").plan
    assert plan.roles == {"vae"}
    plan.configure(vae, True)
    assert vae.use_slicing
    plan.configure(vae, False)
    assert not vae.use_slicing
