"""The search space: which knob values can be tried for this pipeline on this device.

Pure and torch-free. Every value the registry knows ends up in exactly one state, "searched",
"unavailable" (cannot run here, with the reason) or "excluded" (could run, left out by default
or by the user, with the reason), so nothing is dropped silently.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Literal

from autotune import knobs
from autotune.errors import InvalidAssignmentError, UnknownKnobError
from autotune.knobs import Context, Value

Assignment = dict[str, Value]
ChoiceState = Literal["searched", "unavailable", "excluded"]


@dataclasses.dataclass(frozen=True)
class ChoiceStatus:
    knob: str
    value: Value
    state: ChoiceState
    reason: str | None = None


def canonical(assignment: Assignment) -> Assignment:
    """The same assignment with keys in apply order; unknown names raise."""
    for name in assignment:
        knobs.get(name)
    return {k.name: assignment[k.name] for k in knobs.all_knobs() if k.name in assignment}


def assignment_key(assignment: Assignment) -> str:
    """A stable string identifying an assignment, for deduplicating trials."""
    return json.dumps(canonical(assignment), sort_keys=False, separators=(",", ":"))


def check_values(assignment: Assignment) -> Assignment:
    """Names known, values among the knob's choices, no conflicts. Context-free (profile load)."""
    for name, value in assignment.items():
        knob = knobs.get(name)
        if value not in knob.choices or type(value) is not type(knob.default):
            raise InvalidAssignmentError(
                f"knob {name!r} takes one of {', '.join(map(repr, knob.choices))}, got {value!r}"
            )
    for conflict in knobs.iter_conflicts(assignment):
        raise InvalidAssignmentError(
            f"{conflict.knob_a}={assignment[conflict.knob_a]!r} conflicts with "
            f"{conflict.knob_b}={assignment[conflict.knob_b]!r}: {conflict.reason}"
        )
    return canonical(assignment)


def check_available(assignment: Assignment, ctx: Context) -> None:
    """Every value can run in this context, else say why."""
    for name, value in assignment.items():
        reason = knobs.get(name).reason_unavailable(value, ctx)
        if reason:
            raise InvalidAssignmentError(f"{name}={value!r} cannot run here: {reason}")


def _parse_selector(text: str) -> tuple[str, Value | None]:
    """'knob' or 'knob=value' -> (knob, value or None). Values parse like YAML scalars."""
    name, sep, raw = text.partition("=")
    knob = knobs.get(name.strip())
    if not sep:
        return knob.name, None
    if not raw.strip():
        raise InvalidAssignmentError(
            f"{text!r} names no value: {knob.name} takes one of {', '.join(str(c) for c in knob.choices)} "
            f"(or give {knob.name} alone for the whole knob)")
    for choice in knob.choices:
        if str(choice).lower() == raw.strip().lower():
            return knob.name, choice
    raise InvalidAssignmentError(
        f"{text!r}: {knob.name} takes one of {', '.join(str(c) for c in knob.choices)}"
    )


class SearchSpace:
    """Knob choices to search for one context, built from the registry."""

    def __init__(self, ctx: Context, include: Iterable[str] = (), exclude: Iterable[str] = ()):
        self.ctx = ctx
        included = [_parse_selector(s) for s in include]
        excluded = [_parse_selector(s) for s in exclude]
        self._check_selectors(included, excluded)
        self.statuses: list[ChoiceStatus] = []
        self.choices: dict[str, tuple[Value, ...]] = {}
        for knob in knobs.all_knobs():
            kept = []
            for value in knob.choices:
                status = self._status(knob, value, included, excluded)
                self.statuses.append(status)
                if status.state == "searched":
                    kept.append(value)
            self.choices[knob.name] = tuple(kept)

    def _check_selectors(self, included: list, excluded: list) -> None:
        """A selector that would change nothing is a mistake worth saying, not ignoring."""
        for name, value in excluded:
            if value is not None and value == knobs.get(name).default:
                raise InvalidAssignmentError(
                    f"--exclude {name}={value}: the default is the baseline every search starts "
                    f"from; exclude the other values, or the whole knob with --exclude {name}"
                )
        for name, value in included:
            reason = value is not None and knobs.get(name).reason_unavailable(value, self.ctx)
            if reason:
                raise InvalidAssignmentError(f"--include {name}={value} cannot run here: {reason}")

    def _status(self, knob: knobs.Knob, value: Value, included: list, excluded: list) -> ChoiceStatus:
        reason = knob.reason_unavailable(value, self.ctx)
        if reason:
            return ChoiceStatus(knob.name, value, "unavailable", reason)
        if value != knob.default:
            if any(n == knob.name and v in (None, value) for n, v in excluded):
                return ChoiceStatus(knob.name, value, "excluded", "excluded with --exclude")
            default_reason = knob.excluded_by_default(value, self.ctx)
            if default_reason and not any(n == knob.name and v in (None, value) for n, v in included):
                return ChoiceStatus(knob.name, value, "excluded", default_reason)
        return ChoiceStatus(knob.name, value, "searched")

    @property
    def searched_knobs(self) -> list[str]:
        """Knobs with more than one value to choose from."""
        return [name for name, values in self.choices.items() if len(values) > 1]

    def default(self) -> Assignment:
        """Every knob at its default: the exact baseline a search starts from."""
        return {k.name: k.default for k in knobs.all_knobs()}

    def complete(self, partial: Assignment) -> Assignment:
        """Fill knobs the search does not vary with their default, then validate."""
        full = {**self.default(), **partial}
        return self.validate(full)

    def validate(self, assignment: Assignment) -> Assignment:
        unknown = set(assignment) - set(self.choices)
        if unknown:
            raise UnknownKnobError(f"unknown knob(s): {', '.join(sorted(unknown))}")
        checked = check_values(assignment)
        check_available(checked, self.ctx)
        return checked

    def is_valid(self, assignment: Assignment) -> bool:
        try:
            self.validate(assignment)
        except (InvalidAssignmentError, UnknownKnobError):
            return False
        return all(assignment[n] in self.choices[n] for n in assignment)

    def __iter__(self) -> Iterator[Assignment]:
        """Every valid assignment (the space is small: a few hundred at most)."""
        names = list(self.choices)
        for values in itertools.product(*(self.choices[n] for n in names)):
            candidate = dict(zip(names, values))
            if not any(True for _ in knobs.iter_conflicts(candidate)):
                yield candidate

    def size(self) -> int:
        return sum(1 for _ in self)
