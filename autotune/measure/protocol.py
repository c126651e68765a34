"""The typed pipe between `SubprocessMeasurer` and its worker (`python -m autotune.measure.serve`).

Requests go one JSON line each to the worker's stdin, answers one JSON line each on a pipe of
their own. Both sides use only the dataclasses here; `encode`/`decode_request`/`decode_answer`
are the one codec, and the wire keys are the ones earlier versions sent.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, Union

from autotune.measure.records import Measurement, TrialJob
from autotune.measure.timing import StoppingRule


class Op(enum.Enum):
    """What a request asks the worker for."""

    SETUP = "setup"  # start the device backend (once, first)
    TRIAL = "trial"  # load, warm up, time, release: one whole trial
    LOAD = "load"  # load and warm up only (a confirmation's candidate), beside those loaded before
    RUNS = "runs"  # a block of timed runs of a loaded candidate
    RELEASE = "release"  # drop the loaded candidate
    EXIT = "exit"


class ProtocolError(ValueError):
    """A line on the pipe that is no request or answer of this protocol."""


# ---- requests ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Setup:
    device: str
    ceiling: int | None = None
    op = Op.SETUP


@dataclasses.dataclass(frozen=True)
class Trial:
    job: TrialJob
    #: The file the worker sends its output to while it measures this request.
    log: str | None = None
    op = Op.TRIAL


@dataclasses.dataclass(frozen=True)
class Load:
    job: TrialJob
    log: str | None = None
    #: Where the worker keeps it: candidates loaded into other slots stay loaded beside it.
    slot: int = 0
    op = Op.LOAD


@dataclasses.dataclass(frozen=True)
class Runs:
    rule: StoppingRule
    #: The slot whose candidate runs.
    slot: int = 0
    op = Op.RUNS


@dataclasses.dataclass(frozen=True)
class Release:
    op = Op.RELEASE


@dataclasses.dataclass(frozen=True)
class Exit:
    op = Op.EXIT


Request = Union[Setup, Trial, Load, Runs, Release, Exit]


# ---- answers -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Ready:
    """The worker is set up: what its imports and device setup cost."""

    setup_s: float
    import_s: float
    pid: int
    #: The device's NVML usage before the worker's CUDA context existed (CUDA only).
    device_baseline_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class Measured:
    measurement: Measurement


@dataclasses.dataclass(frozen=True)
class Latencies:
    latencies_s: list[float]


@dataclasses.dataclass(frozen=True)
class Released:
    release_s: float
    clean: bool


@dataclasses.dataclass(frozen=True)
class Unrunnable:
    """No trial of this target can run here (the worker exits after saying so)."""

    message: str


@dataclasses.dataclass(frozen=True)
class Failed:
    """An unexpected error: its last line (the traceback is in the log); the worker exits."""

    message: str


Answer = Union[Ready, Measured, Latencies, Released, Unrunnable, Failed]


# ---- the codec -----------------------------------------------------------------------------------

def _request_dict(request: Request) -> dict[str, Any]:
    if isinstance(request, Setup):
        return {"op": request.op.value, "device": request.device, "ceiling": request.ceiling}
    if isinstance(request, Trial):
        return {"op": request.op.value, "job": request.job.to_dict(), "log": request.log}
    if isinstance(request, Load):
        return {"op": request.op.value, "job": request.job.to_dict(), "log": request.log, "slot": request.slot}
    if isinstance(request, Runs):
        return {"op": request.op.value, "rule": request.rule.to_dict(), "slot": request.slot}
    return {"op": request.op.value}


def _answer_dict(answer: Answer) -> dict[str, Any]:
    if isinstance(answer, Ready):
        return {"ok": True, **dataclasses.asdict(answer)}
    if isinstance(answer, Measured):
        return {"measurement": answer.measurement.to_dict()}
    if isinstance(answer, Unrunnable):
        return {"unrunnable": answer.message}
    if isinstance(answer, Failed):
        return {"failed": answer.message}
    return dataclasses.asdict(answer)


def encode(message: Request | Answer) -> bytes:
    """One JSON line."""
    data = _answer_dict(message) if isinstance(message, Answer.__args__) else _request_dict(message)  # type: ignore[attr-defined]
    return (json.dumps(data) + "\n").encode()


def decode_request(line: bytes | str) -> Request:
    data: dict[str, Any] = json.loads(line)
    try:
        op = Op(data.get("op"))
    except ValueError:
        raise ProtocolError(f"unknown request {data.get('op')!r}") from None
    if op is Op.SETUP:
        return Setup(data["device"], data.get("ceiling"))
    if op is Op.TRIAL:
        return Trial(TrialJob.from_dict(data["job"]), data.get("log"))
    if op is Op.LOAD:
        return Load(TrialJob.from_dict(data["job"]), data.get("log"), data.get("slot", 0))
    if op is Op.RUNS:
        return Runs(StoppingRule.from_dict(data["rule"]), data.get("slot", 0))
    return Release() if op is Op.RELEASE else Exit()


def decode_answer(line: bytes | str) -> Answer:
    data: dict[str, Any] = json.loads(line)
    if "unrunnable" in data:
        return Unrunnable(data["unrunnable"])
    if "failed" in data:
        return Failed(data["failed"])
    if "measurement" in data:
        return Measured(Measurement.from_dict(data["measurement"]))
    if "latencies_s" in data:
        return Latencies(list(data["latencies_s"]))
    if "clean" in data:
        return Released(data["release_s"], data["clean"])
    if data.get("ok"):
        return Ready(data.get("setup_s", 0.0), data.get("import_s", 0.0), data.get("pid", 0),
                     data.get("device_baseline_bytes"))
    raise ProtocolError(f"unknown answer with keys {sorted(data)}")
