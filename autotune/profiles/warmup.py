"""`autotune warmup`: build a compiled profile's artifacts on the machine where it will run, and
measure what they save.

Two fresh processes, each with an empty inductor cache directory so that nothing on disk makes a
"cold" start warm: the first applies the profile, times its first call (cold compile) and saves
the compile artifacts beside the profile; the second loads them, applies the profile and times
its first call again. Both times go into the profile's `compile_artifacts` record.

Run as a library function (`warmup(path)`) or `python -m autotune.profiles.warmup PROFILE MODE RESULT.json`
(one measuring process; MODE is `cold` or `artifacts`).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autotune import knobs
from autotune.errors import InvalidTargetError
from autotune.models.call import call_pipeline
from autotune.profiles import compile_cache
from autotune.profiles.apply import apply_profile, load_pipeline
from autotune.profiles.profile import CompileArtifacts, Profile
from autotune.plain_record import Section

log = logging.getLogger(__name__)


def first_call(profile_path: Path, mode: str, device: str | None = None) -> Section:
    """In this process: load, apply (with or without the artifacts), time the first call."""
    import torch

    profile = Profile.load(profile_path)
    pipe = load_pipeline(profile)
    start = time.perf_counter()
    apply_profile(pipe, profile_path, device=device, compile_artifacts=(mode == "artifacts"))
    apply_s = time.perf_counter() - start
    start = time.perf_counter()
    call_pipeline(pipe, profile.target, seed=0)
    if (device or profile.target.device) == "cuda":
        torch.cuda.synchronize()
    out: Section = {"mode": mode, "apply_s": apply_s, "first_call_s": time.perf_counter() - start}
    if mode == "cold":
        key = compile_cache.artifact_key(profile.settings, profile.target, device or profile.target.device)
        record = compile_cache.save(profile_path, key)
        out["record"] = record.to_dict() if record else None
    return out


def _run(profile_path: Path, mode: str, device: str | None, timeout_s: float) -> Section:
    with tempfile.TemporaryDirectory(prefix="autotune-warmup-") as tmp:
        result = Path(tmp) / "result.json"
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "inductor")}
        cmd = [sys.executable, "-m", "autotune.profiles.warmup", str(profile_path), mode, str(result)]
        if device:
            cmd.append(device)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        if proc.returncode != 0 or not result.exists():
            last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
            raise InvalidTargetError(f"warmup ({mode}) of {profile_path} failed: {last[0][:300]}")
        return json.loads(result.read_text())


def warmup(profile_path: str | os.PathLike[str], device: str | None = None, timeout_s: float = 1800.0) -> Profile:
    """Build the artifacts, measure the first call cold and with them, save both in the profile."""
    path = Path(profile_path)
    profile = Profile.load(path)
    if not knobs.compiles(profile.settings):
        raise InvalidTargetError(f"{path} does not compile anything (compile=none): nothing to warm up")
    cold = _run(path, "cold", device, timeout_s)
    if cold.get("record") is None:
        raise InvalidTargetError(f"torch produced no compile artifacts for {path}; nothing was saved")
    record = CompileArtifacts.from_dict(cold["record"])
    record.first_call_s = {"cold": round(cold["first_call_s"], 3)}
    profile.compile_artifacts = record
    profile.save(path)  # the artifacts run below reads the record
    loaded = _run(path, "artifacts", device, timeout_s)
    record.first_call_s["with_artifacts"] = round(loaded["first_call_s"], 3)
    profile.compile_artifacts = record
    profile.save(path)
    log.info("compile artifacts for %s: %s", path, compile_cache.sidecar_path(path))
    return profile


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = sys.argv[1:]
    outcome = first_call(Path(args[0]), args[1], args[3] if len(args) > 3 else None)
    Path(args[2]).write_text(json.dumps(outcome))
