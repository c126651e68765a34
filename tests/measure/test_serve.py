"""The worker process's loop (autotune/measure/serve.py), in this process: requests in, answers out."""
from __future__ import annotations

import io

from autotune.measure import protocol, serve
from autotune.measure.timing import StoppingRule


def answers(*requests: protocol.Request) -> tuple[int, list[protocol.Answer]]:
    channel = io.BytesIO()
    code = serve.serve(channel, io.BytesIO(b"".join(protocol.encode(r) for r in requests)))
    return code, [protocol.decode_answer(line) for line in channel.getvalue().splitlines()]


def test_setup_is_answered_ready_and_exit_ends_the_loop():
    code, said = answers(protocol.Setup("cpu"), protocol.Release(), protocol.Exit(), protocol.Setup("cpu"))
    assert code == 0
    assert [type(a) for a in said] == [protocol.Ready, protocol.Released]  # nothing after the exit
    assert said[0].pid > 0 and said[1].clean


def test_a_request_before_setup_is_a_failure_that_ends_the_process():
    code, said = answers(protocol.Release(), protocol.Setup("cpu"))
    assert code == 1 and len(said) == 1
    assert isinstance(said[0], protocol.Failed) and "before setup" in said[0].message


def test_runs_of_an_empty_slot_fail_with_the_slot_named():
    code, said = answers(protocol.Setup("cpu"), protocol.Runs(StoppingRule(min_runs=1, max_runs=1, time_cap_s=1.0), slot=3))
    assert code == 1 and isinstance(said[-1], protocol.Failed) and "slot 3" in said[-1].message


def test_a_closed_stdin_ends_the_loop_quietly():
    assert answers() == (0, [])
