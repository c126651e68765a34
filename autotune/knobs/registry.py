"""The knob registry: every technique autotune can switch, described once.

A knob knows its choices, the stage it applies in, what it needs to run, and which of its
choices change the numbers beyond float reordering (lossy). Availability is asked of the knob
with a `Context` (knobs/context.py), never guessed from isinstance ladders elsewhere.
Torch-free at import.
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterator
from typing import Any

from autotune.errors import UnknownKnobError
from autotune.knobs.context import Context

Value = Any  # str | bool | int: whatever YAML and Optuna categoricals carry


class Stage(enum.IntEnum):
    """Canonical apply order. Weight storage and layout first, placement next, then runtime
    switches, compile last (it must see the final modules)."""

    LOAD = 0
    PLACE = 1
    TUNE = 2
    COMPILE = 3


@dataclasses.dataclass(frozen=True)
class ApplyContext:
    """What `apply` needs beyond the value: where the pipeline runs."""

    device: str


ApplyFn = Callable[[Any, Value, ApplyContext], None]
ReasonFn = Callable[[Value, Context], "str | None"]


def _always_available(value: Value, ctx: Context) -> str | None:
    return None


@dataclasses.dataclass(frozen=True)
class Knob:
    name: str
    choices: tuple[Value, ...]
    default: Value
    stage: Stage
    help: str
    apply: ApplyFn
    lossy: frozenset[Value] = frozenset()
    requires_components: tuple[str, ...] = ()
    #: Why a choice cannot run in this context (device, package, pipeline), or None.
    unavailable_reason: ReasonFn = _always_available
    #: Why a choice is left out of the search by default though it could run (e.g. too slow on
    #: CPU), or None. The user can include it back.
    excluded_by_default: ReasonFn = _always_available
    #: Choices that leave state in the process beyond the pipeline (torch.compile's caches and
    #: recompile counters): the worker that measured one is replaced before the next trial.
    process_state: frozenset[Value] = frozenset()

    def reason_unavailable(self, value: Value, ctx: Context) -> str | None:
        if value == self.default:
            return None
        missing = [c for c in self.requires_components if c not in ctx.components]
        if self.requires_components and len(missing) == len(self.requires_components):
            return f"the pipeline has no {' or '.join(self.requires_components)} component"
        return self.unavailable_reason(value, ctx)

    def is_lossy(self, value: Value) -> bool:
        return value in self.lossy


@dataclasses.dataclass(frozen=True)
class Conflict:
    """Two knob values that must not be combined, with the reason shown to the user."""

    knob_a: str
    values_a: frozenset[Value]
    knob_b: str
    values_b: frozenset[Value]
    reason: str

    def violated_by(self, assignment: dict[str, Value]) -> bool:
        return assignment.get(self.knob_a) in self.values_a and assignment.get(self.knob_b) in self.values_b


_KNOBS: dict[str, Knob] = {}
_CONFLICTS: list[Conflict] = []


def register(knob: Knob) -> Knob:
    if knob.name in _KNOBS:
        raise ValueError(f"knob {knob.name!r} is registered twice")
    if knob.default not in knob.choices:
        raise ValueError(f"knob {knob.name!r}: default {knob.default!r} is not one of its choices")
    _KNOBS[knob.name] = knob
    return knob


def register_conflict(conflict: Conflict) -> None:
    for name in (conflict.knob_a, conflict.knob_b):
        get(name)
    _CONFLICTS.append(conflict)


def get(name: str) -> Knob:
    try:
        return _KNOBS[name]
    except KeyError:
        raise UnknownKnobError(
            f"unknown knob {name!r}; known knobs: {', '.join(_KNOBS)}"
        ) from None


def all_knobs() -> list[Knob]:
    """Knobs in canonical apply order (stage, then registration order)."""
    order = {name: i for i, name in enumerate(_KNOBS)}
    return sorted(_KNOBS.values(), key=lambda k: (k.stage, order[k.name]))


def conflicts() -> list[Conflict]:
    return list(_CONFLICTS)


def iter_conflicts(assignment: dict[str, Value]) -> Iterator[Conflict]:
    return (c for c in _CONFLICTS if c.violated_by(assignment))
