"""Every default of a search, in one frozen record validated once.

The CLI builds it from its flags, `jobs.start_search` and `Search` take it; nothing else holds a
default for runs, precision, time cap, timeout, quality floor, amortize or the confirmation.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from autotune.errors import InvalidSearchOptionError
from autotune.measure import timing
from autotune.planner.calibration import DEFAULT_PRUNE_MARGIN

#: The default quality floor for lossy settings, PSNR in dB against the reference. 30 dB is an
#: RMS error of 3% of the pixel range, where compression artefacts start to be seen. Measured on
#: CPU (builtin:tiny-sd, 64 px, 4 and 30 steps, benchmarks/results/2026-12-01-quality-per-call-cpu.md):
#: fp16 67 dB, bf16 49 dB, layerwise fp8 43 dB, bf16 + fp8 41-42 dB: the floor passes them all and
#: rejects broken outputs (NaN or black images from an overflow score 0-10 dB). See README
#: "Quality guard".
DEFAULT_MIN_PSNR = 30.0
#: Where a search keeps its studies, trial logs, references and compile cache (`--run-dir`), and
#: the journal file of its studies there (without `--storage`).
DEFAULT_RUN_DIR = Path(".autotune")
STUDIES_FILE = "studies.journal"
#: The precisions the quality reference can be made in (`--reference-dtype`).
REFERENCE_DTYPES = ("fp32", "fp16", "bf16")
#: The flag each option is set by, so that an error names what the user typed.
FLAGS = {"trials": "--trials", "runs": "--runs", "trial_timeout_s": "--timeout", "precision": "--precision",
         "time_cap_s": "--max-run-time", "min_psnr": "--min-psnr", "amortize": "--amortize",
         "time_budget_s": "--time-budget", "warmup": "--warmup", "confirm_timeout_s": "confirm_timeout_s",
         "prune_margin": "prune_margin", "reference_dtype": "--reference-dtype"}


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """How one search measures, judges, ranks and confirms (see `autotune search --help`)."""

    #: Distinct settings to measure (a shared study: the study's total).
    trials: int = 20
    seed: int = 0
    #: Untimed runs, then at least `runs` timed ones until the median is within `precision` of
    #: itself (95% interval) or `time_cap_s` of runs are spent.
    warmup: int = timing.WARMUP
    runs: int = timing.RUNS
    precision: float = timing.PRECISION
    time_cap_s: float = timing.TIME_CAP_S
    #: Seconds before a trial counts as hung.
    trial_timeout_s: float = timing.TRIAL_TIMEOUT_S
    #: A wall for the whole search (None: no limit).
    time_budget_s: float | None = None
    #: The quality floor for lossy settings (None: off).
    min_psnr: float | None = DEFAULT_MIN_PSNR
    reference_dtype: str = "fp32"
    allow_unjudged: bool = False
    #: Images per process lifetime that compile time is spread over when ranking (None: ignore it).
    amortize: int | None = None
    #: Re-measure the finalists side by side at the end; without a time budget the rounds are
    #: bounded by `confirm_timeout_s`.
    confirm: bool = True
    confirm_timeout_s: float = 3600.0
    #: Copy trials of earlier searches of the same measurement key (another ceiling).
    reuse: bool = True
    use_planner: bool = True
    prune_margin: float = DEFAULT_PRUNE_MARGIN

    def __post_init__(self) -> None:
        checks = [("trials", self.trials >= 1, "1 or more"), ("runs", self.runs >= 1, "1 or more"),
                  ("warmup", self.warmup >= 0, "0 or more"),
                  ("trial_timeout_s", self.trial_timeout_s > 0, "more than 0 seconds"),
                  ("precision", 0 < self.precision < 1, "between 0 and 1, e.g. 0.02"),
                  ("time_cap_s", self.time_cap_s > 0, "more than 0 seconds"),
                  ("min_psnr", self.min_psnr is None or 0 <= self.min_psnr < 100, "between 0 and 100 dB, e.g. 30"),
                  ("amortize", self.amortize is None or self.amortize >= 1, "1 or more images"),
                  ("time_budget_s", self.time_budget_s is None or self.time_budget_s > 0, "more than 0 seconds"),
                  ("confirm_timeout_s", self.confirm_timeout_s > 0, "more than 0 seconds"),
                  ("prune_margin", math.isfinite(self.prune_margin) and self.prune_margin >= 0, "0 or more")]
        for name, ok, expected in checks:
            if not ok:
                raise InvalidSearchOptionError(f"{FLAGS[name]} must be {expected}, got {getattr(self, name):g}")
        if self.reference_dtype not in REFERENCE_DTYPES:
            raise InvalidSearchOptionError(f"--reference-dtype must be one of {', '.join(REFERENCE_DTYPES)}, "
                                           f"got {self.reference_dtype!r}")

    @property
    def deadline_s(self) -> float:
        """The time budget as a number (infinite without one)."""
        return math.inf if self.time_budget_s is None else self.time_budget_s

    def replace(self, **changes: object) -> SearchOptions:
        """A copy with `changes`, validated again."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
