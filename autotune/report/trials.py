"""A study's trials as report rows: one per trial that answered something, each with its category.

Categories, as the report marks them: measured and under the ceiling ("feasible"), over the
ceiling, out of memory, failed (a crash, a timeout, an interrupted trial), pruned by the planner
(predicted over the ceiling, never run) and below the quality floor. Proposals answered from the
ledger (duplicates), invalid combinations and trials skipped for the time budget measured
nothing: they are counted, not plotted.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any

from autotune.knobs.space import Assignment
from autotune.measure.measurer import Measurement
from autotune.search import ledger
from autotune.search.ranking import compile_share, fastest, pareto_front

CATEGORIES = ("feasible", "below_quality", "over_ceiling", "over_ram", "oom", "failed", "pruned")
LABELS = {
    "feasible": "feasible",
    "below_quality": "below the quality floor",
    "over_ceiling": "over the ceiling",
    "over_ram": "over the host RAM ceiling",
    "oom": "out of memory",
    "failed": "failed",
    "pruned": "pruned by the planner",
}
#: Study attribute holding the quality floor (PSNR in dB) of a search with a quality guard.
MIN_PSNR_ATTR = ledger.ATTR_MIN_PSNR


@dataclasses.dataclass(frozen=True)
class TrialRow:
    number: int
    category: str
    settings: Assignment
    latency_s: float | None = None
    peak_bytes: int | None = None
    predicted_bytes: int | None = None
    #: The bytes an out-of-memory trial asked for beyond the ceiling, when known.
    oom_excess_bytes: int | None = None
    peak_metric: str | None = None
    quality: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str | None = None
    #: Seconds the trial spent compiling (spread over `StudyRows.amortize` images when ranking).
    compile_s: float = 0.0

    @property
    def timed(self) -> bool:
        return self.latency_s is not None and self.peak_bytes is not None

    def memory_hint(self, ceiling: int) -> int | None:
        """Where to place a trial without a measured peak on a memory axis: what it asked for
        (ceiling + excess) when out of memory, else the planner's prediction."""
        if self.peak_bytes is not None:
            return self.peak_bytes
        if self.category == "oom":
            return ceiling + (self.oom_excess_bytes or 0)
        return self.predicted_bytes


@dataclasses.dataclass
class StudyRows:
    rows: list[TrialRow]
    ceiling: int
    target: dict[str, Any]
    min_psnr: float | None
    #: Proposals that measured nothing: duplicate, invalid, skipped (time budget).
    not_measured: Counter
    #: Knobs the study searched, with their choices (study attr "space"), else those that varied.
    space: dict[str, list[Any]]
    confirmation: dict[str, Any] | None = None
    #: Images the search spread compile time over when ranking (None: it did not).
    amortize: int | None = None
    #: The dtype of the reference the quality numbers are against (None: the study does not say).
    reference_dtype: str | None = None
    #: The per-call floor of lossy settings (None: off, or a study from before it existed).
    min_sqnr: float | None = None

    @property
    def reference(self) -> str:
        """What the quality numbers are against, as the report names it."""
        dtype = f"{self.reference_dtype} " if self.reference_dtype else ""
        return f"the {dtype}reference (every knob at its exact default)"

    def cost_s(self, row: TrialRow) -> float:
        """How the search ranked the trial (ranking.py): latency plus the amortized compile."""
        return (row.latency_s if row.latency_s is not None else math.inf) + compile_share(row.compile_s, self.amortize)

    def by(self, category: str) -> list[TrialRow]:
        return [r for r in self.rows if r.category == category]

    @property
    def has_quality(self) -> bool:
        return any(r.quality for r in self.rows)

    def best(self) -> TrialRow | None:
        """The confirmed winner if the study recorded one, else the fastest feasible trial."""
        feasible = self.by("feasible")
        if self.confirmation and "winner" in self.confirmation:
            for row in feasible:
                if row.number == self.confirmation["winner"]:
                    return row
        return fastest(feasible, self.cost_s, lambda r: r.number)

    def pareto(self) -> list[TrialRow]:
        """Feasible trials no other feasible trial beats on both cost and peak, cheapest first:
        the search's own front (ranking.py), so the report shows what the profile keeps."""
        return pareto_front(self.by("feasible"), self.cost_s, lambda r: r.peak_bytes, lambda r: r.number)


def study_rows(study: Any) -> StudyRows:
    """Read every trial of an Optuna study written by `autotune search`."""
    attrs = study.user_attrs
    target = dict(attrs.get(ledger.ATTR_TARGET) or {})
    ceiling = int(target.get("max_vram") or 0)
    min_psnr = attrs.get(MIN_PSNR_ATTR)
    rows, skipped = [], Counter()
    for trial in study.get_trials(deepcopy=False):
        row = _row(trial, ceiling, min_psnr)
        if isinstance(row, str):
            skipped[row] += 1
        elif row is not None:
            rows.append(row)
    space = attrs.get(ledger.ATTR_SPACE) or {}
    searched = {k: list(v) for k, v in space.items() if len(v) > 1}
    if not searched:  # an older study: the knobs whose value changed between trials
        values: dict[str, set] = {}
        for row in rows:
            for k, v in row.settings.items():
                values.setdefault(k, set()).add(repr(v))
        searched = {k: sorted({r.settings[k] for r in rows if k in r.settings}, key=repr)
                    for k, v in values.items() if len(v) > 1}
    return StudyRows(rows=rows, ceiling=ceiling, target=target,
                     min_psnr=float(min_psnr) if min_psnr is not None else None,
                     not_measured=skipped, space=searched, confirmation=attrs.get(ledger.ATTR_CONFIRMATION),
                     amortize=attrs.get(ledger.ATTR_AMORTIZE),
                     reference_dtype=(attrs.get(ledger.ATTR_REFERENCE) or {}).get("dtype"),  # the knob on purpose
                     min_sqnr=(attrs.get(ledger.ATTR_GUARD) or {}).get("min_sqnr"))


def _row(trial: Any, ceiling: int, min_psnr: float | None) -> TrialRow | str | None:
    import optuna

    kind = ledger.not_measured_kind(trial)
    if kind is not None:
        return kind
    measurement = ledger.measurement_of(trial)
    if measurement is None:
        if trial.state == optuna.trial.TrialState.FAIL:  # interrupted: closed on resume
            return TrialRow(trial.number, "failed", dict(trial.params), error="interrupted")
        return "running" if trial.state == optuna.trial.TrialState.RUNNING else "other"
    prediction = ledger.prediction_of(trial)
    quality = {k: float(v) for k, v in (measurement.quality.to_dict() if measurement.quality else {}).items()
               if _number(v)}
    return TrialRow(
        number=trial.number,
        category=_category(ledger.outcome_of(trial), measurement, ceiling, quality, min_psnr),
        settings=ledger.assignment_of(trial),
        latency_s=_median(list(measurement.latencies_s or [])),
        peak_bytes=measurement.peak_bytes,
        predicted_bytes=prediction.total_bytes if prediction is not None else None,
        oom_excess_bytes=measurement.memory.oom_excess_bytes,
        peak_metric=measurement.peak_metric,
        quality=quality,
        error=measurement.error,
        compile_s=float(measurement.phases.compile_s or 0.0),
    )


def _category(outcome: str, measurement: Measurement, ceiling: int, quality: dict[str, float],
              min_psnr: float | None) -> str:
    """The stored outcome as the search judged it (exact settings pass the quality floor whatever
    their PSNR); a trial stored before outcomes were is judged from its measurement."""
    if "quality" in outcome:
        return "below_quality"
    if outcome in CATEGORIES:
        return outcome
    from autotune.search.trials import classify

    category = classify(measurement, ceiling)[0] if ceiling else "failed"
    if category == "feasible" and min_psnr is not None and quality.get("psnr_db", math.inf) < min_psnr:
        return "below_quality"
    return category


def _median(values: list[float]) -> float | None:
    import statistics

    return statistics.median(values) if values else None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
