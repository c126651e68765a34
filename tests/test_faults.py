"""Worker faults: a worker that segfaults, is SIGKILLed, hangs past its timeout or runs out of host
RAM gives a FAILed trial with the reason, the search goes on, and the worker's log is kept.

The worker here is a stand-in speaking the real protocol (worker_process.py: JSON requests on
stdin, a setup request first, answers on the fd appended to its command, its output in the trial's
log): it misbehaves on the assignments it is told to, and answers a measurement otherwise. Host
RAM is capped with RLIMIT_AS by a wrapper, as `prlimit` or a container limit would.
"""
from __future__ import annotations

import optuna
import os
import resource
import sys
import textwrap

import pytest

from autotune.knobs import Context
from autotune.measure.measurer import SubprocessMeasurer, TrialJob
from autotune.knobs.space import SearchSpace
from autotune.search.study import Search
from autotune.target import Target

MiB = 2**20

#: dtype -> what the worker does with a trial of it; anything else is measured normally.
FAULTY_WORKER = textwrap.dedent("""
    import json, os, signal, sys, time
    answers = os.fdopen(int(sys.argv[-1]), "w")
    faults = json.loads(os.environ["FAULTS"])

    def answer(message):
        answers.write(json.dumps(message) + "\\n")
        answers.flush()

    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "exit":
            break
        if request["op"] == "setup":
            answer({"ok": True})
            continue
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log, 1)
        os.dup2(log, 2)
        assignment = request["job"]["assignment"]
        fault = faults.get(assignment.get("dtype"), "")
        print(f"trial {request['job']['number']}: {assignment} -> {fault or 'ok'}", flush=True)
        if fault == "segfault":
            import ctypes
            ctypes.string_at(0)
        elif fault == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "hang":
            time.sleep(600)
        elif fault == "ram":
            hog = bytearray(8 * 2**30)  # more than RLIMIT_AS lets this process have
        latency = 1.0 + 0.1 * assignment.get("vae_slicing", False)
        answer({"measurement": {"status": "ok", "backend": "fake", "device_name": "fake",
                                "peak_metric": "fake_peak", "latencies_s": [latency] * 3,
                                "peak_bytes": 2**20}})
""")

#: Runs the worker with its address space capped, like a host with little RAM left.
RLIMIT_WRAPPER = textwrap.dedent("""
    import os, resource, sys
    limit = int(os.environ["RAM_LIMIT"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
""")


def _target() -> Target:
    return Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**30)


def _space() -> SearchSpace:
    """dtype x vae_slicing: 6 assignments, two of each dtype."""
    ctx = Context(device="cpu", components=frozenset({"unet", "vae", "text_encoder"}))
    return SearchSpace(ctx, exclude=["layerwise_fp8", "channels_last", "attention", "vae_tiling"])


def _measurer(tmp_path, faults: dict[str, str], timeout_s: float = 5.0) -> SubprocessMeasurer:
    script = tmp_path / "faulty_worker.py"
    script.write_text(FAULTY_WORKER)
    wrapper = tmp_path / "rlimit.py"
    wrapper.write_text(RLIMIT_WRAPPER)
    return SubprocessMeasurer(
        timeout_s=timeout_s, log_dir=tmp_path / "logs",
        env={"FAULTS": __import__("json").dumps(faults), "RAM_LIMIT": str(512 * MiB)},
        worker_command=[sys.executable, str(wrapper), str(script)])


def _job(dtype: str, number: int) -> TrialJob:
    return TrialJob(_target(), {"dtype": dtype, "vae_slicing": False}, number=number)


@pytest.mark.parametrize("fault, reason", [
    ("segfault", "worker killed by SIGSEGV"),
    ("sigkill", "worker killed by SIGKILL"),
    ("hang", "timed out after 1 s"),
    ("ram", "MemoryError"),
])
def test_a_faulty_trial_fails_with_its_reason_and_keeps_its_log(tmp_path, fault, reason):
    with _measurer(tmp_path, {"fp16": fault}, timeout_s=1.0) as measure:
        before = measure(_job("fp32", 0))
        failed = measure(_job("fp16", 1))
        after = measure(_job("fp32", 2))
    assert before.status == "ok" and after.status == "ok"
    assert failed.status == "failed" and reason in failed.error, failed.error
    log = tmp_path / "logs" / "trial-0001.log"
    assert failed.log_path == str(log)
    assert f"-> {fault}" in log.read_text()  # what the worker said before it went
    if fault == "ram":
        assert "MemoryError" in log.read_text()  # and its traceback
    # The measurer moved on to a fresh worker, and the faulty one is gone.
    assert after.device_info.worker_pid != before.device_info.worker_pid
    with pytest.raises(ProcessLookupError):
        os.kill(before.device_info.worker_pid, 0)


def test_a_search_goes_on_past_every_kind_of_fault(tmp_path):
    faults = {"fp16": "segfault", "bf16": "hang"}
    measurer = _measurer(tmp_path, faults, timeout_s=1.0)
    search = Search(_target(), _space(), measurer, storage=tmp_path / "s.journal", confirm=False)
    try:
        result = search.run(6)
    finally:
        measurer.close()
    assert len(result.records) == 6  # every assignment was measured: the faults did not stop it
    by_dtype = {}
    for record in result.records:
        by_dtype.setdefault(record.assignment["dtype"], set()).add(record.outcome)
    assert by_dtype == {"fp32": {"feasible"}, "fp16": {"failed"}, "bf16": {"failed"}}
    states = {t.number: t for t in search.study.trials}
    for record in result.records:
        trial = states[record.number]
        if record.outcome == "failed":
            assert trial.state == optuna.trial.TrialState.FAIL
            reason = "SIGSEGV" if record.assignment["dtype"] == "fp16" else "timed out"
            assert reason in trial.user_attrs["error"]
            assert (tmp_path / "logs" / f"trial-{record.number:04d}.log").exists()
    assert result.best is not None and result.best.assignment["dtype"] == "fp32"


def test_the_rlimit_wrapper_really_caps_memory():
    """(The RAM case above proves something only if the cap holds in the worker.)"""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    assert soft == resource.RLIM_INFINITY or soft > 512 * MiB  # this process is not capped itself
    import subprocess

    code = "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0])"
    wrapper = RLIMIT_WRAPPER
    done = subprocess.run([sys.executable, "-c", wrapper, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "RAM_LIMIT": str(512 * MiB)})
    assert done.stdout.strip() == str(512 * MiB), done.stderr
