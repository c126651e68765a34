"""What this search knows, in memory: one record per distinct assignment, measured or pruned."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from autotune.knobs.space import assignment_key
from autotune.search.ranking import fastest_feasible
from autotune.search.trials import TrialRecord


@dataclasses.dataclass
class Book:
    """Measured and pruned records by assignment key; the first record of a key is kept."""

    seen: dict[str, TrialRecord] = dataclasses.field(default_factory=dict)
    pruned: dict[str, TrialRecord] = dataclasses.field(default_factory=dict)

    def add(self, record: TrialRecord) -> None:
        shelf = self.pruned if record.outcome == "pruned" else self.seen
        shelf.setdefault(assignment_key(record.assignment), record)

    def take(self, records: Iterable[TrialRecord]) -> None:
        for record in records:
            self.add(record)

    def answered(self, key: str) -> TrialRecord | None:
        """The record that already answers these settings (measured or pruned), if any."""
        return self.seen.get(key) or self.pruned.get(key)

    @property
    def known(self) -> int:
        return len(self.seen) + len(self.pruned)

    @property
    def measured(self) -> list[TrialRecord]:
        return sorted(self.seen.values(), key=lambda r: r.number)

    @property
    def pruned_records(self) -> list[TrialRecord]:
        return sorted(self.pruned.values(), key=lambda r: r.number)

    def feasible(self) -> list[TrialRecord]:
        return [r for r in self.seen.values() if r.feasible]

    def best(self, amortize: int | None) -> TrialRecord | None:
        return fastest_feasible(self.seen.values(), amortize)

    def by_number(self, number: int) -> TrialRecord:
        return next(r for r in self.seen.values() if r.number == number)
