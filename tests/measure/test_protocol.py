"""The worker pipe: every request and answer survives its one codec, on the wire keys of before."""
from __future__ import annotations

import json

import pytest

from autotune.measure import protocol
from autotune.measure.records import Measurement, TrialJob
from autotune.measure.timing import StoppingRule
from autotune.target import Target

JOB = TrialJob(Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**30),
               {"dtype": "fp32"}, runs=2, number=3)
MEASURED = Measurement(status="ok", backend="cpu", device_name="x", peak_metric="p", latencies_s=[1.0, 2.0])


@pytest.mark.parametrize("message", [
    protocol.Setup("cuda", 8 * 2**30), protocol.Setup("cpu"), protocol.Trial(JOB, "/tmp/t.log"),
    protocol.Load(JOB, None), protocol.Load(JOB, "/tmp/c.log", slot=2),
    protocol.Runs(StoppingRule(min_runs=2, max_runs=2)), protocol.Runs(StoppingRule(min_runs=1, max_runs=1), slot=2),
    protocol.Release(),
    protocol.Exit(),
])
def test_requests_round_trip(message):
    assert protocol.decode_request(protocol.encode(message)) == message


@pytest.mark.parametrize("message", [
    protocol.Ready(setup_s=0.5, import_s=3.0, pid=42, device_baseline_bytes=None),
    protocol.Measured(MEASURED), protocol.Latencies([0.1, 0.2]), protocol.Released(0.01, True),
    protocol.Unrunnable("--max-vram is below the CUDA context"), protocol.Failed("ValueError: boom"),
])
def test_answers_round_trip(message):
    assert protocol.decode_answer(protocol.encode(message)) == message


def test_the_wire_keys_are_those_of_before():
    """A worker or a parent of the previous version on the other end still understands."""
    assert json.loads(protocol.encode(protocol.Setup("cuda", 5))) == {"op": "setup", "device": "cuda", "ceiling": 5}
    assert json.loads(protocol.encode(protocol.Exit())) == {"op": "exit"}
    assert json.loads(protocol.encode(protocol.Failed("x"))) == {"failed": "x"}
    ready = json.loads(protocol.encode(protocol.Ready(0.5, 3.0, 42, 7)))
    assert ready == {"ok": True, "setup_s": 0.5, "import_s": 3.0, "pid": 42, "device_baseline_bytes": 7}
    trial = json.loads(protocol.encode(protocol.Trial(JOB, "/tmp/t.log")))
    assert trial["op"] == "trial" and trial["log"] == "/tmp/t.log" and TrialJob.from_dict(trial["job"]) == JOB
    # a load or runs of before named no slot: the one candidate is slot 0
    rule = StoppingRule(min_runs=2, max_runs=2)
    assert protocol.decode_request(json.dumps({"op": "runs", "rule": rule.to_dict()})) == protocol.Runs(rule, slot=0)
    load = {"op": "load", "job": JOB.to_dict(), "log": None}
    assert protocol.decode_request(json.dumps(load)) == protocol.Load(JOB, None, slot=0)


def test_an_unknown_request_or_answer_is_a_protocol_error():
    with pytest.raises(protocol.ProtocolError, match="unknown request 'fly'"):
        protocol.decode_request(b'{"op": "fly"}\n')
    with pytest.raises(protocol.ProtocolError, match="unknown answer"):
        protocol.decode_answer(b'{"what": 1}\n')
    assert [op.value for op in protocol.Op] == ["setup", "trial", "load", "runs", "release", "exit"]
