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

#: The default quality floor for lossy settings: the per-call SQNR in dB, the lower of the
#: denoiser's on the reference's inputs and the VAE decode's on its latent (quality.below_floor).
#: Per call, not on the final image, because the image's PSNR measures the chaos of sampling as
#: much as the knob: on the structured built-in (CPU, benchmarks/results/
#: 2026-12-02-quality-structured-cpu.md) layerwise fp8 scored 39.5 dB end to end at 4 steps and
#: 30.7 dB at 30, bf16 + fp8 40.2 and 29.7 (under the old 30 dB floor at 30 steps only), while
#: per call they moved 3 dB (fp8 29.9 and 26.7 dB); exact reorderings stay over 120 dB per call.
#: 20 dB (an error a tenth of the signal per call) passes every lossy value measured on both
#: built-ins (the lowest: fp8 on builtin:tiny-sd, 21-22 dB, benchmarks/results/
#: 2026-12-01-quality-per-call-cpu.md) and torchao's own fp8 tests hold 22-30 dB; it refuses
#: what is several times worse. See README "Quality guard".
DEFAULT_MIN_SQNR = 20.0
#: The floor on the final image, PSNR in dB against the reference, for lossy settings whose
#: error builds up across steps (the cache: one call cannot show it) and for trials without a
#: per-call number. 30 dB is an RMS error of 3% of the pixel range, where compression artefacts
#: start to be seen; NaN or black images from an overflow score 0-10 dB.
DEFAULT_MIN_PSNR = 30.0
#: Where a search keeps its studies, trial logs, references and compile cache (`--run-dir`), and
#: the journal file of its studies there (without `--storage`).
DEFAULT_RUN_DIR = Path(".autotune")
STUDIES_FILE = "studies.journal"
#: The precisions the quality reference can be made in (`--reference-dtype`).
REFERENCE_DTYPES = ("fp32", "fp16", "bf16")
#: The flag each option is set by, so that an error names what the user typed.
FLAGS = {"trials": "--trials", "runs": "--runs", "trial_timeout_s": "--timeout", "precision": "--precision",
         "time_cap_s": "--max-run-time", "min_psnr": "--min-psnr", "min_sqnr": "--min-sqnr", "amortize": "--amortize",
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
    #: The quality floors for lossy settings, per call and on the final image (None: off).
    min_sqnr: float | None = DEFAULT_MIN_SQNR
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
                  ("min_sqnr", self.min_sqnr is None or 0 <= self.min_sqnr < 100, "between 0 and 100 dB, e.g. 20"),
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
