"""How many timed runs are enough, and how sure we are of a median.

Latency samples are skewed and carry outliers (a GC pause, a descheduled thread, a clock ramp),
so the statistic is the median and its confidence interval is distribution-free: the order
statistics x(k) and x(n-k+1) bracket the true median with probability >= 95% when k is chosen
from the binomial(n, 1/2) tail. No normality is assumed, nothing is fitted, and one wild run
cannot move it. A trial keeps timing until that interval is narrow enough (2% half-width of the
median by default) or its time cap is spent; whatever it reached is recorded beside the number.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import ClassVar

from autotune.plain_record import PlainRecord

#: Below this many runs no 95% interval for a median exists (n=5: 1 - 2/32 < 0.95).
MIN_RUNS_FOR_CI = 6
#: Runs so slow that `min_runs` would blow the time cap stop at this many (a median of three).
MIN_RUNS_WHEN_SLOW = 3
#: A trial whose median is surely this much slower than the incumbent's stops at its minimum
#: runs (racing): a precise number buys nothing, since a finalist is re-measured side by side
#: anyway (confirm.WITHIN, twice this margin) and a slower one is out of the race.
RACE_MARGIN = 0.10
#: A trial whose one timed run took more than this many times the incumbent's median stops at
#: once, and one whose n runs all took more than its n-th root times it stops after them
#: (`far_behind`): no noise seen here (run-to-run IQR 25-35% on an H100) doubles a latency, and
#: such runs were most of a search's time (fp16 on CPU: 6 s a run against 0.4 s).
FAR_BEHIND = 2.0


def far_behind(runs: int) -> float:
    """How many times the incumbent's median every one of `runs` runs must exceed for a trial to
    stop: `FAR_BEHIND` after one run, 1.41 after two, 1.26 after three ... down to the racing
    margin. Under the eager noise measured on an H100 (a run is its floor times 1 + Exp(0.3)), a
    trial as fast as the incumbent does that with probability under 1% for every n (0.9% after
    one and two runs, 0.5% after three, 0.3% after four); from six runs on it is the rule of
    the median's interval (its low end, the fastest run, `RACE_MARGIN` above)."""
    return max(FAR_BEHIND ** (1 / max(1, runs)), 1 + RACE_MARGIN)


def _binom_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median, or None when `samples` are too few."""
    n = len(samples)
    alpha = (1 - confidence) / 2
    k = 0  # the largest k with P(X < k) <= alpha; the interval is [x(k), x(n-k+1)] (1-based)
    while k < n // 2 and _binom_cdf(k, n) <= alpha:
        k += 1
    if k == 0:
        return None
    ordered = sorted(samples)
    return ordered[k - 1], ordered[n - k]


@dataclasses.dataclass(frozen=True)
class TimingStats:
    """What the timed runs of one trial say: the median, how sure, and how spread."""

    runs: int
    median_s: float
    ci_low_s: float | None
    ci_high_s: float | None
    min_s: float
    max_s: float
    iqr_s: float

    @property
    def ci_rel_half_width(self) -> float | None:
        """Half the confidence interval as a fraction of the median (None: too few runs)."""
        if self.ci_low_s is None or self.ci_high_s is None or self.median_s <= 0:
            return None
        return (self.ci_high_s - self.ci_low_s) / 2 / self.median_s

    @property
    def spread(self) -> float:
        """Interquartile range over the median."""
        return self.iqr_s / self.median_s if self.median_s > 0 else 0.0

    def to_dict(self) -> dict[str, float | int | None]:
        return {**dataclasses.asdict(self), "ci_rel_half_width": self.ci_rel_half_width,
                "spread": self.spread}

    def record(self) -> TimingRecord:
        """These statistics as a profile entry keeps them."""
        return TimingRecord.from_dict(self.to_dict())


@dataclasses.dataclass(frozen=True)
class TimingRecord(PlainRecord):
    """A profile entry's timing statistics (`TimingStats.record()`), read back through the
    profile's section codec; empty (`TimingRecord.none()`) where no statistics were kept."""

    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "runs": (int,), **{name: (float,) for name in (
            "median_s", "ci_low_s", "ci_high_s", "min_s", "max_s", "iqr_s", "ci_rel_half_width", "spread")}}

    runs: int | None = None
    median_s: float | None = None
    ci_low_s: float | None = None
    ci_high_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    iqr_s: float | None = None
    #: Half the median's 95% interval over the median (None: too few runs).
    ci_rel_half_width: float | None = None
    #: Interquartile range over the median.
    spread: float | None = None

    @classmethod
    def none(cls) -> TimingRecord:
        """No statistics (a version 1 profile's entries; written `timing: {}`)."""
        return cls.from_dict({})


def timing_stats(samples: Sequence[float]) -> TimingStats:
    if not samples:
        raise ValueError("no timed runs")
    ci = median_ci(samples)
    if len(samples) >= 2:
        quartiles = statistics.quantiles(samples, n=4)
        iqr = quartiles[2] - quartiles[0]
    else:
        iqr = 0.0
    return TimingStats(runs=len(samples), median_s=statistics.median(samples),
                       ci_low_s=ci[0] if ci else None, ci_high_s=ci[1] if ci else None,
                       min_s=min(samples), max_s=max(samples), iqr_s=iqr)


#: How a trial is timed unless told otherwise: untimed warm-up runs, then at least `RUNS` timed
#: ones until the median's 95% interval is within `PRECISION` of it or `TIME_CAP_S` of runs are
#: spent; a trial not done in `TRIAL_TIMEOUT_S` counts as hung. The one place these numbers live:
#: `SearchOptions` (the search's flags), `TrialJob` and `SubprocessMeasurer` read them here.
WARMUP = 1
#: ... and in a newly started worker this many more: a new worker's first runs read slow, and a
#: compiled trial always starts one; the confirmation discards as many on a GPU, its warm-up
#: round (confirm_plan.WARMUP_ROUNDS x RUNS_PER_ROUND; one run on CPU, where a round is one run),
#: so both time a new worker alike. The defaults, first
#: in their worker, read 6-22% slower than the winner after them in the README job of 0a53d18;
#: on an idle machine, alternating in one warm worker, they read 1.05-1.16x wherever they ran, as
#: in the search (benchmarks/results/2026-12-02-readme-job-cpu-8ae324f-idle.md): that slowness
#: was the machine's, not the first trial's.
NEW_WORKER_WARMUP = 3
RUNS = 6
PRECISION = 0.02
TIME_CAP_S = 10.0
TRIAL_TIMEOUT_S = 600.0


@dataclasses.dataclass(frozen=True)
class StoppingRule:
    """When a trial's timed runs stop: precise enough, or out of time, or out of runs.

    `min_runs` are made (the cheapest trial still gets a median of several) unless runs are so
    slow that the `time_cap_s` is spent first, then `MIN_RUNS_WHEN_SLOW`; past them the loop
    stops as soon as the 95% interval's half-width is within `precision` of the median, or the
    time cap is spent, or `max_runs` are made. With an `incumbent_s` (the search's best so far),
    it also stops once the interval's low end is more than `RACE_MARGIN` above it, and as soon as every
    run so far is over `far_behind` times it (twice it after one run): the effort goes to the
    trials near the top.
    """

    min_runs: int = MIN_RUNS_FOR_CI
    max_runs: int = 100
    precision: float = PRECISION
    time_cap_s: float = TIME_CAP_S
    incumbent_s: float | None = None

    def __post_init__(self) -> None:
        if self.min_runs < 1 or self.max_runs < self.min_runs:
            raise ValueError(f"need 1 <= min_runs <= max_runs, got {self.min_runs}, {self.max_runs}")
        if self.precision <= 0 or self.time_cap_s <= 0:
            raise ValueError("precision and time_cap_s must be positive")
        if self.incumbent_s is not None and not self.incumbent_s > 0:
            raise ValueError(f"incumbent_s must be positive, got {self.incumbent_s}")

    def done(self, samples: Sequence[float], elapsed_s: float) -> bool:
        n = len(samples)
        if n >= self.max_runs:
            return True
        # Before the time cap: a run slower than the cap would otherwise buy two more runs of a
        # trial already far behind (seen under a load of 13 on 2 cores: 3 runs of 104 s).
        if self.incumbent_s is not None and n >= 1 and min(samples) > self.incumbent_s * far_behind(n):
            return True
        if elapsed_s >= self.time_cap_s:
            return n >= min(self.min_runs, MIN_RUNS_WHEN_SLOW)
        if n < self.min_runs:
            return False
        stats = timing_stats(samples)
        if self.incumbent_s is not None and stats.ci_low_s is not None \
                and stats.ci_low_s > self.incumbent_s * (1 + RACE_MARGIN):
            return True
        rel = stats.ci_rel_half_width
        return rel is not None and rel <= self.precision

    def to_dict(self) -> dict[str, float | int | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float | int | None]) -> StoppingRule:
        return cls(**data)  # type: ignore[arg-type]


def sign_test_p(ratios: Sequence[float]) -> float:
    """Two-sided sign test that paired ratios are centred on 1 (ties dropped): a drift-robust
    test for interleaved rounds, where each round compares two candidates under the same
    conditions."""
    above = sum(r > 1 for r in ratios)
    below = sum(r < 1 for r in ratios)
    n = above + below
    if n == 0:
        return 1.0
    return min(1.0, 2 * _binom_cdf(min(above, below), n))


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile: exact for 1 and 2 degrees of freedom, the Abramowitz-Stegun
    26.7.5 expansion above (within 0.5% for p <= 0.999 from 3 on), so no SciPy is needed."""
    if not 0 < p < 1 or df < 1:
        raise ValueError(f"need 0 < p < 1 and df >= 1, got {p}, {df}")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    x = statistics.NormalDist().inv_cdf(p)
    g1 = (x**3 + x) / 4
    g2 = (5 * x**5 + 16 * x**3 + 3 * x) / 96
    g3 = (3 * x**7 + 19 * x**5 + 17 * x**3 - 15 * x) / 384
    g4 = (79 * x**9 + 776 * x**7 + 1482 * x**5 - 1920 * x**3 - 945 * x) / 92160
    return x + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float] | None:
    """Mean and two-sided t interval of a few independent values (e.g. one per worker process),
    or None below two values."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half
