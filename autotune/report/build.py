"""Build the report files from a study (see the package docstring for what is written)."""
from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from pathlib import Path
from typing import Any

from autotune.errors import AutotuneError, StudyError
from autotune.knobs.space import Assignment
from autotune.report import html as pages
from autotune.report.source import StudySource, locate, open_study
from autotune.report.trials import CATEGORIES, LABELS, StudyRows, TrialRow, study_rows
from autotune.units import format_size

log = logging.getLogger(__name__)

REQUIRED = ("matplotlib", "plotly", "pandas")


@dataclasses.dataclass
class Report:
    out_dir: Path
    #: What was written, by name: "tradeoff", "prediction", "knobs", "quality", "trials", "html".
    files: dict[str, Path]
    source: StudySource
    data: StudyRows
    #: Plots left out, and why (no planner, no quality numbers, too few trials for Optuna...).
    skipped: list[str]


def default_out_dir(path: str | Path) -> Path:
    """Beside a profile: `NAME-report/`; in a run directory: `report/`."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        return path.with_name(f"{path.stem}-report")
    return (path if path.is_dir() else path.parent) / "report"


def build_report(path: str | Path, out_dir: str | Path | None = None, *, study_name: str | None = None) -> Report:
    """Write the report for the study behind `path` (a profile, a run directory, a journal file or
    a storage URL) into `out_dir` (default: `default_out_dir(path)`)."""
    require_packages()
    source = locate(path, study_name)
    study = open_study(source)
    data = study_rows(study)
    if not data.rows:
        raise StudyError(f"study {source.study_name!r} in {source.storage} has no measured trial yet; "
                         "run `autotune search` (or --resume it) first")
    out = Path(out_dir) if out_dir is not None else default_out_dir(path)
    out.mkdir(parents=True, exist_ok=True)
    from autotune.report import plots

    files: dict[str, Path] = {}
    skipped: list[str] = []
    for name, make, why_not in (
        ("tradeoff", plots.tradeoff_figure, ""),
        ("prediction", plots.prediction_figure, "no planner prediction was stored (searched without the planner)"),
        ("knobs", plots.knob_figure, "no knob took more than one value among the timed trials"),
        ("quality", plots.quality_figure, "the search stored no quality numbers (no quality guard)"),
    ):
        figure = make(data)
        if figure is None:
            skipped.append(f"{name}: {why_not}")
            continue
        files[name] = _save(figure, out / f"{name}.png")
    files["trials"] = out / "trials.csv"
    frame = trials_frame(data)
    frame.to_csv(files["trials"], index=False)
    interactive = optuna_figures(study, data, skipped)
    files["html"] = out / "report.html"
    files["html"].write_text(_html(source, data, files, interactive, frame, skipped), encoding="utf-8")
    return Report(out_dir=out, files=files, source=source, data=data, skipped=skipped)


def require_packages() -> None:
    import importlib.util

    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        raise AutotuneError(f"autotune report needs {', '.join(missing)}; install them with "
                            "`pip install 'diffusers-autotune[report]'`")


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path, dpi=120)
    return path


def _changed(settings: Assignment) -> str:
    from autotune.knobs import all_knobs

    defaults = {k.name: k.default for k in all_knobs()}
    return " ".join(f"{k}={v}" for k, v in settings.items() if k in defaults and defaults[k] != v) or "defaults"


#: The quality numbers trials.csv carries, when the search measured any.
QUALITY_COLUMNS = ("psnr_db", "ssim", "latent_rel_error", "denoiser_sqnr_db", "decode_sqnr_db")


def trials_frame(data: StudyRows) -> Any:
    """One row per trial: outcome, latency, peak, prediction and its error, quality, settings."""
    import pandas as pd

    def mib(value: int | None) -> float | None:
        return None if value is None else round(value / 2**20, 3)

    records = []
    for r in sorted(data.rows, key=lambda r: r.number):
        error = ((r.predicted_bytes - r.peak_bytes) / r.peak_bytes
                 if r.predicted_bytes is not None and r.peak_bytes else None)
        records.append({
            "trial": r.number, "outcome": LABELS[r.category],
            "latency_s": None if r.latency_s is None else round(r.latency_s, 4),
            "peak_mib": mib(r.peak_bytes), "predicted_mib": mib(r.predicted_bytes),
            "prediction_error": None if error is None else f"{error:+.1%}",
            "psnr_db": r.quality.get("psnr_db"), "ssim": r.quality.get("ssim"),
            "latent_rel_error": r.quality.get("latent_rel_error"),
            "denoiser_sqnr_db": r.quality.get("denoiser_sqnr_db"),
            "decode_sqnr_db": r.quality.get("decode_sqnr_db"),
            "settings": _changed(r.settings), "error": (r.error or "")[:120],
        })
    frame = pd.DataFrame.from_records(records)
    if not data.has_quality:
        frame = frame.drop(columns=list(QUALITY_COLUMNS))
    return frame


def optuna_figures(study: Any, data: StudyRows, skipped: list[str]) -> list[tuple[str, str, Any]]:
    """Optuna's own interactive plots of the study: (heading, note, plotly figure)."""
    import optuna
    from optuna import visualization as vis

    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.values and all(math.isfinite(v) for v in t.values)]
    if len(complete) < 2:
        skipped.append("Optuna's plots: fewer than 2 completed trials with finite values")
        return []
    out: list[tuple[str, str, Any]] = []

    def peak_mib(t: Any) -> float:
        return t.values[1] / 2**20

    def latency(t: Any) -> float:
        return t.values[0] if math.isfinite(t.values[0]) else math.nan

    plots: list[tuple[str, str, Any]] = [
        ("Pareto front (Optuna)", "Completed trials only; grey ones broke the ceiling constraint. Hover for "
         "the settings.", lambda: vis.plot_pareto_front(
             study, targets=lambda t: (t.values[0], peak_mib(t)), target_names=["latency (s)", "peak (MiB)"])),
        ("Latency by knob value (Optuna slice plot)", "", lambda: vis.plot_slice(
            study, target=latency, target_name="latency (s)")),
        ("Peak memory by knob value (Optuna slice plot)", "", lambda: vis.plot_slice(
            study, target=peak_mib, target_name="peak (MiB)")),
        ("Which knobs mattered for latency (Optuna importance)", "Estimated from few trials: a hint, not a "
         "measurement.", lambda: vis.plot_param_importances(study, target=latency, target_name="latency (s)")),
    ]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "trial N omitted: value is inf" (out of memory)
    try:
        for heading, note, make in plots:
            try:
                with warnings.catch_warnings():  # Optuna's advice on its own evaluator, not the user's
                    warnings.simplefilter("ignore", UserWarning)
                    out.append((heading, note, _fit(make())))
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # too few or too uniform trials
                skipped.append(f"{heading}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        optuna.logging.set_verbosity(verbosity)
    return out


def _fit(figure: Any, width: int = 1100) -> Any:
    """Optuna sizes some plots by their parameter count (300 px each): keep them within the page."""
    if figure.layout.width is None or figure.layout.width > width:
        figure.update_layout(width=width)
    return figure


def _summary(source: StudySource, data: StudyRows) -> list[tuple[str, str]]:
    from autotune.report.plots import title_of

    counts = ", ".join(f"{len(data.by(c))} {LABELS[c]}" for c in CATEGORIES if data.by(c))
    unmeasured = ", ".join(f"{n} {what}" for what, n in sorted(data.not_measured.items()))
    rows = [("target", title_of(data)), ("ceiling", f"{format_size(data.ceiling)} ({data.ceiling} bytes)"),
            ("study", f"{source.study_name} in {source.storage}"),
            ("trials", counts + (f"; proposals that measured nothing: {unmeasured}" if unmeasured else ""))]
    floors = ([f"SQNR per call >= {data.min_sqnr:g} dB"] if data.min_sqnr is not None else []) + (
        [f"PSNR >= {data.min_psnr:g} dB" + (" where judged on the image" if data.min_sqnr is not None else "")]
        if data.min_psnr is not None else [])
    if floors:
        rows.append(("quality floor", f"lossy settings: {'; '.join(floors)}, against {data.reference}"))
    best = data.best()
    if best is not None:
        rows.append(("winner", _describe(best)))
    if source.profile is not None:
        profile = source.profile
        rows.append(("profile", f"{source.given}: {_changed(profile.best.settings)}, "
                                f"{profile.best.latency_median_s:.3f} s, {format_size(profile.best.peak_bytes)}; "
                                f"{len(profile.alternatives)} alternative(s) for lower ceilings"))
    if data.confirmation:
        c = data.confirmation
        rows.append(("confirmation", ", ".join(f"{k}={v}" for k, v in c.items() if not isinstance(v, (dict, list)))))
    return rows


def _describe(row: TrialRow) -> str:
    quality = f", PSNR {row.quality['psnr_db']:g} dB" if "psnr_db" in row.quality else ""
    return (f"#{row.number}: {_changed(row.settings)}, {row.latency_s:.3f} s, "
            f"{format_size(row.peak_bytes)}{quality}")


_NOTES = {
    "tradeoff": "Every trial. Circles: feasible; triangles: over the ceiling; diamonds: below the quality "
                "floor; the strip below holds trials never timed, at the memory they asked for (out of memory) "
                "or were predicted to need (pruned, failed). The line is the feasible Pareto front: each step "
                "is the fastest setting for a lower ceiling.",
    "prediction": "The planner's prediction made before each trial ran, against what the trial measured.",
    "knobs": "Trials change several knobs at once: read the medians as tendencies, the slice plots below for detail.",
    "quality": "Distance of each trial's output from {reference}: same prompt, seed and steps.",
}


def _html(source: StudySource, data: StudyRows, files: dict[str, Path], interactive: list[tuple[str, str, Any]],
          frame: Any, skipped: list[str]) -> str:
    sections = []
    for name, heading in (("tradeoff", "Latency vs peak memory"), ("prediction", "Planner prediction vs measurement"),
                          ("knobs", "Each knob's effect"), ("quality", "Image quality")):
        if name in files:
            note = _NOTES[name].format(reference=data.reference)
            sections.append((heading, note, pages.png_tag(files[name], heading)))
    embed = pages.PlotlyEmbedder()
    for heading, note, figure in interactive:
        sections.append((heading, note, embed(figure)))
    sections.append(("Trials", f"Also in {files['trials'].name}.", frame.to_html(index=False, classes="trials",
                                                                                 na_rep="-", border=0)))
    if skipped:
        sections.append(("Left out", "", "<ul>" + "".join(f"<li>{pages.html.escape(s)}</li>" for s in skipped) + "</ul>"))
    return pages.page(f"autotune report: {source.study_name}", _summary(source, data), sections)
