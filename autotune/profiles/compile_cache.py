"""Compiled profiles: torch.compile's caches packaged beside the profile, so production pays the
compile once, not at every start.

PyTorch packages its inductor FX-graph and AOTAutograd caches with
`torch.compiler.save_cache_artifacts()` and reloads them with `load_cache_artifacts(bytes)`.
They are only valid for the same torch/triton, device, dtype, input shapes and compile options,
so the sidecar carries that key; a profile applied where any part differs compiles cold, with a
one-line warning that names the part.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from autotune import hardware, knobs
from autotune.knobs import Value
from autotune.profiles.profile import CompileArtifacts
from autotune.plain_record import Section
from autotune.target import Target

log = logging.getLogger(__name__)

#: The profile field that names the sidecar.
FIELD = "compile_artifacts"


def artifact_key(settings: dict[str, Value], target: Target, device: str) -> Section:
    """Everything the compiled code depends on: torch, the device, the shapes, and every knob's
    value (any knob may change the graph: dtype, layout, attention kernel, fused projections)."""
    import torch

    try:
        triton = version("triton")
    except PackageNotFoundError:
        triton = None
    capability = None
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        capability = f"{props.major}.{props.minor}"
    return {
        "torch": torch.__version__, "triton": triton, "device": device,
        "device_name": hardware.device_name(device),
        "compute_capability": capability, "height": target.height, "width": target.width,
        "batch": target.batch, "frames": getattr(target, "frames", None),
        **{k.name: settings.get(k.name, k.default) for k in knobs.all_knobs()},
    }


def sidecar_path(profile_path: Path) -> Path:
    return profile_path.with_name(f"{profile_path.stem}.compile.bin")


def save(profile_path: Path, key: Section) -> CompileArtifacts | None:
    """Write this process's compile artifacts beside the profile; the profile's record of them,
    or None when this process compiled nothing."""
    import torch

    packaged = torch.compiler.save_cache_artifacts()
    if packaged is None:
        return None
    data = packaged[0]
    path = sidecar_path(profile_path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return CompileArtifacts(file=path.name, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), key=key)


def differences(stored: Section, current: Section) -> list[str]:
    """What differs, by name. A name the stored key lacks was not recorded by the version that
    wrote it (a knob added since): not a difference."""
    return [f"{name} ({stored.get(name)!r} there, {current.get(name)!r} here)"
            for name in sorted(stored) if stored.get(name) != current.get(name)]


def load(record: CompileArtifacts, profile_path: Path, current_key: Section) -> bool:
    """Load the sidecar before the first call when its key matches; else warn in one line and
    let the first call compile cold. True when the artifacts were loaded."""
    import torch

    changed = differences(record.key, current_key)
    if changed:
        warnings.warn(f"compile artifacts not used, the first call compiles cold: {', '.join(changed)} "
                      "differ; run `autotune warmup` on this machine", stacklevel=3)
        return False
    if not record.file:
        warnings.warn("compile artifacts not used (the profile names no file); the first call compiles cold",
                      stacklevel=3)
        return False
    path = profile_path.with_name(record.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        warnings.warn(f"compile artifacts not used ({path}: {exc.strerror}); the first call compiles cold",
                      stacklevel=3)
        return False
    if hashlib.sha256(data).hexdigest() != record.sha256:
        warnings.warn(f"compile artifacts not used: {path} does not match the profile's hash; "
                      "run `autotune warmup` to rebuild them", stacklevel=3)
        return False
    torch.compiler.load_cache_artifacts(data)
    log.info("loaded compile artifacts %s (%d bytes)", path, len(data))
    return True
