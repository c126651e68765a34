"""The planner's prediction of one candidate, and its one codec.

A `Prediction` is stored with each trial (search/ledger.py, trial attribute "prediction"),
printed by `autotune plan --json` and `autotune search --json`, and read back by the report and
the profile. The stored keys are the field names plus `lower_bound_bytes` (derived, written for
readers of the storage such as Optuna's dashboard); they are the keys every earlier version wrote.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: Keys every stored prediction has had since the planner first stored one.
_REQUIRED = ("total_bytes", "peak_phase", "resident_weights_bytes", "activation_bytes", "workspace_bytes",
             "allocator_bytes", "runtime_bytes", "phases", "metric")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Predicted peak of one assignment, in the unit of the device's own peak metric."""

    total_bytes: int
    #: The phase the peak happens in, in words ("denoiser step", "VAE decode", "text encoder").
    peak_phase: str
    resident_weights_bytes: int
    activation_bytes: int
    workspace_bytes: int
    allocator_bytes: int
    runtime_bytes: int
    #: Predicted peak of each phase, by the same words as `peak_phase`.
    phases: Mapping[str, int]
    #: The peak metric predicted ("cuda_process_peak", "cpu_live_tensor_peak"), as Measurement's.
    metric: str
    context_floor_bytes: int = 0
    #: Host RAM the pipeline takes at its peak, beyond what the process holds without it: on
    #: CUDA what the placement keeps or stages in RAM (knobs' `PlanEffect.host`), on CPU the
    #: whole peak (weights and activations live in RAM). No fitted term: a lower bound of the
    #: process's resident set. None: stored before host RAM was predicted.
    host_bytes: int | None = None

    @property
    def lower_bound_bytes(self) -> int:
        """Traced weights + activations + the smallest possible CUDA context: what a run needs at
        the very least. No fitted term is in it, so pruning on it never drops a candidate because
        of a calibration that does not carry over to another card or shape."""
        return self.resident_weights_bytes + self.activation_bytes + self.context_floor_bytes

    def over(self, ceiling: int) -> float:
        """Relative excess of the prediction over the ceiling (<= 0 fits)."""
        return (self.total_bytes - ceiling) / ceiling

    def surely_over(self, ceiling: int, margin: float) -> bool:
        """True when even the lower bound exceeds the ceiling by more than `margin`."""
        return self.lower_bound_bytes > ceiling * (1 + margin)

    def surely_over_ram(self, max_ram: int | None, margin: float) -> bool:
        """True when the host RAM the pipeline needs exceeds `max_ram` by more than `margin`."""
        return max_ram is not None and self.host_bytes is not None and self.host_bytes > max_ram * (1 + margin)

    # -- codec (study storage, JSON output) -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "phases": dict(self.phases), "lower_bound_bytes": self.lower_bound_bytes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        """A stored prediction. Predictions stored before the context floor existed have no
        `context_floor_bytes`: their lower bound counted the CUDA runtime term instead, so the floor
        is what their stored `lower_bound_bytes` says, and the bound reads back as it was stored."""
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ValueError(f"a stored prediction needs {', '.join(_REQUIRED)}; this one has no "
                             f"{', '.join(missing)} (got {', '.join(map(str, data)) or 'nothing'})")
        weights, activations = int(data["resident_weights_bytes"]), int(data["activation_bytes"])
        if "context_floor_bytes" in data:
            floor = int(data["context_floor_bytes"])
        elif "lower_bound_bytes" in data:
            floor = int(data["lower_bound_bytes"]) - weights - activations
        else:
            floor = 0
        return cls(total_bytes=int(data["total_bytes"]), peak_phase=str(data["peak_phase"]),
                   resident_weights_bytes=weights, activation_bytes=activations,
                   workspace_bytes=int(data["workspace_bytes"]), allocator_bytes=int(data["allocator_bytes"]),
                   runtime_bytes=int(data["runtime_bytes"]),
                   phases={str(k): int(v) for k, v in dict(data["phases"]).items()},
                   metric=str(data["metric"]), context_floor_bytes=floor,
                   host_bytes=None if data.get("host_bytes") is None else int(data["host_bytes"]))
