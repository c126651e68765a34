"""Host RAM as a third ceiling (`--max-ram`): the worker's resident-set peak, sampled by the
search process (backends/host_memory.py), against the target's `max_ram`."""
from __future__ import annotations

import dataclasses

import pytest
from helpers.fakes import FakeMeasurer, fake_measurement

from autotune.cli.search_cmd import TrialPrinter
from autotune.errors import InvalidTargetError
from autotune.knobs import Context
from autotune.knobs.space import SearchSpace
from autotune.search.study import Search
from autotune.target import Target
from autotune.search.trials import classify

MiB, GiB = 2**20, 2**30


def target(max_ram=None) -> Target:
    return Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=100 * MiB,
                  max_ram=max_ram)


def with_rss(measurement, rss):
    measurement.memory.host_rss_peak = rss
    return measurement


def test_max_ram_is_validated_and_leaves_old_keys_alone():
    with pytest.raises(InvalidTargetError, match="--max-ram must be a positive size"):
        target(max_ram=0)
    assert target().key() == Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2,
                                     max_vram=100 * MiB).key()  # run dirs of older searches keep their names
    assert target(4 * GiB).measurement_key() == target().measurement_key()  # measurements shared
    assert Target.from_dict(target(4 * GiB).to_dict()).max_ram == 4 * GiB


def test_a_trial_over_max_ram_is_infeasible_by_its_excess():
    m = with_rss(fake_measurement(None, peak=50 * MiB), 5 * GiB)
    assert classify(m, 100 * MiB) == ("feasible", -0.5)  # no host ceiling: nothing to check
    assert classify(m, 100 * MiB, max_ram=4 * GiB) == ("over_ram", 0.25)
    assert classify(m, 100 * MiB, max_ram=8 * GiB)[0] == "feasible"
    over_vram = with_rss(fake_measurement(None, peak=150 * MiB), 5 * GiB)
    assert classify(over_vram, 100 * MiB, max_ram=4 * GiB)[0] == "over_ceiling"  # the device first
    unread = fake_measurement(None, peak=50 * MiB)  # no RSS reading (no /proc): not judged on it
    assert classify(unread, 100 * MiB, max_ram=4 * GiB)[0] == "feasible"


def test_a_search_under_max_ram_keeps_only_what_fits_and_says_the_rss(tmp_path, capsys):
    """fp32 fits the device but its worker needs 6 GiB of host RAM: over --max-ram 4GB."""
    def cost(a):
        m = fake_measurement(None, latency={"fp32": 1.0, "fp16": 1.5, "bf16": 1.6}[a["dtype"]], peak=50 * MiB)
        return with_rss(m, 6 * GiB if a["dtype"] == "fp32" else 3 * GiB)

    ctx = Context(device="cpu", components=frozenset({"unet", "vae", "text_encoder"}))
    space = SearchSpace(ctx, exclude=["layerwise_fp8", "channels_last", "attention", "vae_tiling", "vae_slicing"])
    search = Search(target(4 * GiB), space, FakeMeasurer(cost), storage=tmp_path / "s.journal", confirm=False)
    result = search.run(3)
    outcomes = {r.assignment["dtype"]: r.outcome for r in result.records}
    assert outcomes == {"fp32": "over_ram", "fp16": "feasible", "bf16": "feasible"}
    assert result.best.assignment["dtype"] == "fp16"

    fp32 = next(r for r in result.records if r.assignment["dtype"] == "fp32")
    TrialPrinter({k: v for k, v in fp32.assignment.items()}, total=3)(fp32, 1, result.best)
    line = capsys.readouterr().err
    assert "over_ram" in line and "host RAM peak 6.00 GiB" in line

    # The same trials, read again by a search without the host ceiling: all feasible, fp32 wins.
    again = Search(dataclasses.replace(target(), max_ram=None), space, FakeMeasurer(cost),
                   storage=tmp_path / "s2.journal", confirm=False).run(3)
    assert again.best.assignment["dtype"] == "fp32"


def test_the_workers_pristine_copy_is_not_the_trials():
    """The warm worker keeps a pristine copy of the weights for the next trials: in its RSS, not
    in a production process's, so it must not push a trial over --max-ram."""
    m = with_rss(fake_measurement(None, peak=50 * MiB), 5 * GiB)
    m.memory.host_pristine_bytes = 2 * GiB
    assert m.memory.trial_rss_peak == 3 * GiB
    assert classify(m, 100 * MiB, max_ram=4 * GiB)[0] == "feasible"
    assert classify(m, 100 * MiB, max_ram=2 * GiB) == ("over_ram", 0.5)
    assert with_rss(fake_measurement(None, peak=1), None).memory.trial_rss_peak is None


def test_the_worker_says_how_big_its_pristine_copy_is(tiny_pipe, monkeypatch):
    from autotune.measure import weights
    from autotune.measure.records import Phases

    monkeypatch.setattr("autotune.models.pipelines.build_pipeline", lambda model, **kw: tiny_pipe)
    host = weights.HostWeights()
    host.fresh("builtin:tiny-sd", {}, Phases())
    assert host.pristine_bytes == weights.weight_bytes(tiny_pipe) > 0
    host.max_fraction = 0.0  # too big to keep: rebuilt per trial, nothing kept
    host.fresh("builtin:tiny-sd", {"dtype": "fp16"}, Phases())
    assert host.pristine_bytes == 0


def test_the_planner_prunes_what_surely_needs_more_host_ram_than_max_ram():
    from autotune.planner.prediction import Prediction
    from autotune.search import gates

    def proposal(host):
        p = gates.Proposal({"offload": "model"})
        p.prediction = Prediction(total_bytes=MiB, peak_phase="denoiser step", resident_weights_bytes=MiB,
                                  activation_bytes=0, workspace_bytes=0, allocator_bytes=0, runtime_bytes=0,
                                  phases={}, metric="cuda_process_peak", host_bytes=host)
        return p

    def verdict(host, max_ram):
        ctx = gates.GateContext(space=None, book=None, target=target(max_ram), prune_margin=0.1,
                                seconds_left=1e9, expected_s=lambda a: None)
        return gates.planner_prune(ctx, proposal(host))

    assert verdict(5 * GiB, 4 * GiB) == gates.Verdict(gates.Gate.PRUNE, why="over --max-ram")
    assert verdict(int(4.2 * GiB), 4 * GiB) is None  # within the margin: measured
    assert verdict(5 * GiB, None) is None and verdict(None, 4 * GiB) is None  # no ceiling; an old prediction


def test_the_planners_host_ram_follows_the_offload_mode_and_the_device():
    """builtin:tiny-sd's weights: loaded into RAM whatever the mode; twice with streamed group
    offload (a pinned copy beside the loaded one); on CPU the whole peak, activations too."""
    from autotune.knobs import all_knobs
    from autotune.planner import Planner

    defaults = {k.name: k.default for k in all_knobs()}
    cuda = Planner(dataclasses.replace(target(), device="cuda"))
    host = {mode: cuda.predict({**defaults, "offload": mode}).host_bytes
            for mode in ("none", "model", "group-block-1", "group-block-1-stream", "group-block-1-stream-lowmem")}
    weights = host["none"]
    assert weights == host["model"] == host["group-block-1"] > 0
    assert host["group-block-1-stream"] == 2 * weights
    assert weights < host["group-block-1-stream-lowmem"] < 2 * weights
    fp16 = cuda.predict({**defaults, "offload": "model", "dtype": "fp16"}).host_bytes
    assert fp16 == pytest.approx(weights / 2, rel=0.01)
    cpu = Planner(target()).predict(defaults)
    assert cpu.host_bytes == cpu.total_bytes > weights  # weights and activations in RAM
