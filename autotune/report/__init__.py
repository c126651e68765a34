"""`autotune report`: what a search measured, as pictures and one HTML page.

`build_report(path, out_dir)` reads the study behind a profile (its `search.storage` and
`search.study_name`) or the latest study of a run directory and writes:

- `tradeoff.png`: latency vs peak memory of every trial, outcomes marked, Pareto front, ceiling;
- `prediction.png`: the planner's predicted peak vs the measured one (when the planner ran);
- `knobs.png`: each searched knob's effect on latency and peak;
- `quality.png`: latency vs PSNR/SSIM to the reference (its dtype named) (when the search measured quality);
- `trials.csv`: one row per trial;
- `report.html`: all of the above plus Optuna's interactive Pareto, slice and importance plots,
  self-contained (PNGs as base64, plotly.js inline).

Needs the `report` extra (matplotlib, plotly, pandas): `pip install 'diffusers-autotune[report]'`.
Nothing here is imported by `import autotune`.
"""
from __future__ import annotations

from autotune.report.build import Report, build_report, default_out_dir

__all__ = ["Report", "build_report", "default_out_dir"]
