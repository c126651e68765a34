"""The parent's handle on one worker process: start it, ask it, kill it.

Requests go to the worker's stdin as JSON lines; answers come back on a pipe of their own (the
worker's stdout and stderr are the trial's log). Every wait has a deadline: a worker that hangs
is killed, one that dies is reported with its signal or its last log line. Torch-free.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from autotune.measure import protocol
from autotune.measure.protocol import Answer, Request
from autotune.measure.records import Phases

log = logging.getLogger(__name__)


class WorkerGone(Exception):
    """The worker ended (crash, signal, exit) before answering; the message says how."""


class WorkerTimeout(Exception):
    """The worker did not answer before the deadline; it has been killed."""


class WorkerProcess:
    """One worker process. `start` it, then `request` with a deadline (time.monotonic())."""

    def __init__(self, command: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        read_fd, write_fd = os.pipe()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            # start_new_session: a Ctrl-C in the terminal reaches the search, which then ends the
            # worker itself, instead of killing a worker mid-trial behind the search's back.
            self.proc = subprocess.Popen(
                [*command, str(write_fd)], stdin=subprocess.PIPE, stdout=log_file,
                stderr=subprocess.STDOUT, pass_fds=(write_fd,), env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        os.close(write_fd)
        self._answers = read_fd
        self._buffer = b""
        self.pid = self.proc.pid
        self.tainted = False  # set by the owner when the process must not measure again
        #: What its start cost: imports (torch, diffusers) and device setup (CUDA init, context).
        self.startup = Phases()
        #: The device's NVML usage before its CUDA context existed (CUDA only): the baseline of
        #: the device-wide delta where NVML does not list the worker's PID.
        self.device_baseline_bytes: int | None = None

    def request(self, message: Request, deadline: float) -> Answer:
        """Send one request, wait for its answer until `deadline`."""
        log_path = getattr(message, "log", None)
        if log_path:  # the worker writes this request's output there: a crash is read there
            self.log_path = Path(log_path)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(protocol.encode(message))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died: reading the answer below says how
        return self._read_answer(deadline)

    def _read_answer(self, deadline: float) -> Answer:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise WorkerTimeout()
            ready, _, _ = select.select([self._answers], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise WorkerGone(self._describe_exit())
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return protocol.decode_answer(line)

    def _describe_exit(self) -> str:
        try:
            returncode = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            return "worker closed its answer pipe and did not exit"
        self._close_fds()
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            return f"worker killed by {name}"
        lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "no output"
        return f"worker exited with code {returncode}: {last[:300]}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout_s: float = 5.0) -> None:
        """Ask it to exit; kill it if it does not."""
        if self.alive:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(protocol.encode(protocol.Exit()))
                self.proc.stdin.flush()
                self.proc.wait(timeout=timeout_s)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.kill()
        self._close_fds()

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
            self.proc.wait()
        self._close_fds()

    def _close_fds(self) -> None:
        if self._answers >= 0:
            os.close(self._answers)
            self._answers = -1
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
