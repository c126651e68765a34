"""The quality reference: the output every trial of a target is judged against.

One per target (model, size, batch, steps, call), device, reference dtype and seed, kept in the
run directory and shared by every search of that target whatever its ceiling: the reference is
made without the memory ceiling (a ceiling says what the user's settings may use, not what the
judge may), and where it does not fit the device at all, again with sequential offload, which
changes where weights live, not the numbers. A search that cannot make one says why
(`Reference.problem`), and lossy trials are then not judged, so not trusted.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

from autotune.measure.measurer import Measurer, TrialJob
from autotune.knobs.space import Assignment, canonical
from autotune.search.summary import ReferenceInfo
from autotune.target import NO_CEILING, Target

log = logging.getLogger(__name__)

#: The exact placement tried when the reference does not fit the device without offload.
FALLBACK_OFFLOAD = "sequential"
DTYPE_KNOB = "dtype"  # the knob on purpose: --reference-dtype
OFFLOAD_KNOB = "offload"  # the knob on purpose: the placement that changes no number


@dataclasses.dataclass(frozen=True)
class Reference:
    """Where a target's reference lives and what it is made with."""

    key: str
    path: Path
    dtype: str
    settings: Assignment
    #: How it was made ("without the memory ceiling", or with offload), once made or found.
    made: str = "without the memory ceiling"
    #: Why there is none (None: it exists).
    problem: str | None = None

    @property
    def exists(self) -> bool:
        return self.problem is None and self.path.exists()

    def info(self) -> ReferenceInfo:
        """What a quality guard (and the profile) records of it."""
        return ReferenceInfo(key=self.key, reference_dtype=self.dtype, settings=self.settings, made=self.made,
                             problem=self.problem)


def reference_key(target: Target, dtype: str, seed: int, device_name: str | None) -> str:
    """The file name of a target's reference: everything its output depends on but the ceiling."""
    device = re.sub(r"[^A-Za-z0-9]+", "-", device_name or target.device).strip("-").lower()
    return f"{target.measurement_key()}-{dtype}-seed{seed}-{device}"


def reference_settings(default: Assignment, dtype: str, offload: str | None = None) -> Assignment:
    """Every knob at its (exact) default, in the reference dtype; with `offload` if given."""
    extra = {DTYPE_KNOB: dtype} if offload is None else {DTYPE_KNOB: dtype, OFFLOAD_KNOB: offload}
    return canonical({**default, **extra})


def locate(folder: Path, target: Target, default: Assignment, dtype: str, seed: int,
           device_name: str | None) -> Reference:
    key = reference_key(target, dtype, seed, device_name)
    return Reference(key=key, path=folder / f"{key}.npz", dtype=dtype, settings=reference_settings(default, dtype))


def without_ceiling(target: Target) -> Target:
    """The target the reference runs as: no ceiling where the worker enforces one (CUDA). A CPU
    worker never enforces it (the search only classifies peaks), so there the target stays as
    it is and the warm worker of the trials measures the reference too, with no extra start."""
    return target if target.device == "cpu" else dataclasses.replace(target, max_vram=NO_CEILING)


def make(reference: Reference, target: Target, measurer: Measurer, *, warmup: int, seed: int,
         can_offload: bool, timeout_s: float | None = None) -> Reference:
    """The reference, made if it is not there yet: one run without the ceiling; if that runs out
    of the device's memory, one more with sequential offload (when the device has it). Returns
    it with `problem` set when it could not be made or is no image (quality.reference_problem)."""
    from autotune.measure import quality

    if reference.path.exists():
        return _checked(_with_sidecar(reference), quality)
    unlimited = without_ceiling(target)
    attempts = [(reference.settings, "without the memory ceiling")]
    if can_offload:
        attempts.append((reference_settings(reference.settings, reference.dtype, FALLBACK_OFFLOAD),
                         f"without the memory ceiling, with offload={FALLBACK_OFFLOAD}"))
    problem = "not made"
    for settings, made in attempts:
        job = TrialJob(unlimited, settings, warmup=warmup, runs=1, max_runs=1, seed=seed,
                       save_reference=str(reference.path))
        log.info("making the quality reference (%s, %s)", reference.dtype, made)
        measurement = measurer(job, timeout_s=timeout_s)
        if measurement.status == "ok" and reference.path.exists():
            made_here = dataclasses.replace(reference, settings=settings, made=made)
            _sidecar(reference.path).write_text(json.dumps({"settings": settings, "made": made}))
            return _checked(made_here, quality)
        problem = (f"the {reference.dtype} reference run {made} "
                   + ("left no output" if measurement.status == "ok" else
                      f"ended in {measurement.status}: {measurement.error or 'no error recorded'}"))
        if measurement.status != "oom":
            break
    log.warning("no quality reference: %s", problem)
    return dataclasses.replace(reference, problem=problem)


def _sidecar(path: Path) -> Path:
    """How the reference at `path` was made (its settings), beside it."""
    return path.with_suffix(".json")


def _with_sidecar(reference: Reference) -> Reference:
    try:
        data = json.loads(_sidecar(reference.path).read_text())
        return dataclasses.replace(reference, settings=dict(data["settings"]), made=str(data["made"]))
    except (OSError, ValueError, KeyError, TypeError):  # made by an older autotune: the defaults
        return reference


def _checked(reference: Reference, quality: Any) -> Reference:
    try:
        problem = quality.reference_problem(quality.load_reference(reference.path))
    except (OSError, ValueError, EOFError, KeyError) as exc:  # torn or foreign file
        problem = f"the reference file {reference.path} cannot be read ({type(exc).__name__}: {exc})"
    if problem:
        log.warning("the quality reference at %s cannot judge anything: %s", reference.path, problem)
        return dataclasses.replace(reference, problem=problem)
    return reference
