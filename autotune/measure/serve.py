"""The worker process: `python -m autotune.measure.serve FD`, started by
`autotune.measure.process.WorkerProcess`. Requests (protocol.py) arrive as JSON lines on stdin,
answers leave as JSON lines on file descriptor FD, and stdout/stderr go to the log of the trial
being measured; the measuring itself is worker.py's `Worker`.

Why a warm process: a fresh Python pays 3-5 s importing torch and diffusers, and a fresh build
pays loading the weights; here both are paid once, and every trial starts from a pristine copy of
the weights kept in host memory. Why it is still safe: a trial's pipeline is a copy, dropped
after the trial, and the parent replaces the process after anything that leaves state behind in
it (a compiled model, an out-of-memory error, a crash): see `SubprocessMeasurer`.

The worker catches only the device's out-of-memory error (a measured outcome). Any other
exception is answered as a failure with its last line, logged with its traceback, and ends the
process.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from typing import IO

from autotune.errors import InvalidTargetError
from autotune.measure import protocol
from autotune.measure.worker import Worker

log = logging.getLogger("autotune.worker")


def _redirect_output(log_path: str | None) -> None:
    """Send this process's stdout/stderr (and so its log lines) to the trial's log file."""
    if not log_path:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _answer(channel: IO[bytes], answer: protocol.Answer) -> None:
    channel.write(protocol.encode(answer))
    channel.flush()


def _setup(request: protocol.Setup) -> tuple[Worker, protocol.Ready]:
    from autotune.measure.backends import get_backend

    start = time.perf_counter()
    backend = get_backend(request.device, request.ceiling)
    backend.setup()
    return Worker(backend), protocol.Ready(setup_s=time.perf_counter() - start, import_s=_IMPORT_S,
                                           pid=os.getpid(),
                                           device_baseline_bytes=backend.info.nvml_baseline_used_bytes)


def handle(worker: Worker, request: protocol.Request) -> protocol.Answer:
    """The answer to one request after setup."""
    if isinstance(request, (protocol.Trial, protocol.Load)):
        _redirect_output(request.log)
        if isinstance(request, protocol.Load):
            return protocol.Measured(worker.hold(request.slot, request.job))
        log.info("trial %s on %s", request.job.assignment, request.job.target.device)
        result = worker.trial(request.job)
        log.info("done: %s", result.status)
        return protocol.Measured(result)
    if isinstance(request, protocol.Runs):  # a block of an interleaved comparison of loaded candidates
        worker.select(request.slot)
        return protocol.Latencies(worker.timed_runs(request.rule))
    if isinstance(request, protocol.Release):
        return worker.release()
    raise protocol.ProtocolError(f"unexpected request {request.op.value!r}")


def serve(channel: IO[bytes], requests: IO[bytes] | IO[str]) -> int:
    """Answer requests until 'exit' or the parent closes stdin (it died: so do we)."""
    worker: Worker | None = None
    for line in requests:
        try:
            request = protocol.decode_request(line)
            if isinstance(request, protocol.Exit):
                return 0
            if isinstance(request, protocol.Setup):
                worker, ready = _setup(request)
                _answer(channel, ready)
            elif worker is None:
                raise RuntimeError(f"request {request.op.value!r} before setup")
            else:
                _answer(channel, handle(worker, request))
        except InvalidTargetError as exc:  # no trial of this target can run here: say so once
            log.error("%s", exc)
            _answer(channel, protocol.Unrunnable(str(exc)))
            return 0
        except BaseException as exc:
            traceback.print_exc()
            _answer(channel, protocol.Failed(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]))
            return 1
    return 0


_IMPORT_S = 0.0


def _die_with_parent() -> None:
    """Linux: be killed (SIGKILL) when the search process dies, even by `kill -9`, instead of
    finishing a trial nobody will read. Elsewhere the closed stdin ends the worker after its trial."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def main(argv: list[str]) -> int:
    global _IMPORT_S
    _die_with_parent()
    start = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    import diffusers  # noqa: F401  (paid once per process; timed as import_s)
    import torch  # noqa: F401

    import autotune.knobs.settings  # noqa: F401
    import autotune.models.pipelines  # noqa: F401

    _IMPORT_S = time.perf_counter() - start
    channel = os.fdopen(int(argv[0]), "wb")
    return serve(channel, sys.stdin.buffer)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
