"""The report's pictures that Optuna's visualization does not draw (matplotlib, Agg backend).

- `tradeoff_figure`: latency against peak memory for every trial, each outcome marked its own way,
  the feasible Pareto front, the ceiling, the winner. Trials that were never timed (out of
  memory, failed, pruned by the planner) sit in a strip below, at the memory they asked for or
  were predicted to need.
- `prediction_figure`: the planner's predicted peak against the measured one.
- `knob_figure`: each searched knob's effect: latency and peak of every timed trial by its value.
- `quality_figure`: latency against PSNR/SSIM to the reference, with the quality floor.
Optuna's own Pareto, slice and importance plots go into the HTML (html.py).
"""
from __future__ import annotations

from typing import Any

from autotune.report.trials import LABELS, StudyRows, TrialRow
from autotune.units import format_size

#: marker, colour, filled: distinct by shape as well as colour (readable in grey and for CVD).
STYLE = {
    "feasible": ("o", "#1f77b4", True),
    "below_quality": ("D", "#9467bd", False),
    "over_ceiling": ("^", "#ff7f0e", True),
    "over_ram": ("P", "#bcbd22", True),
    "oom": ("X", "#d62728", True),
    "failed": ("s", "#7f7f7f", False),
    "pruned": ("v", "#8c564b", False),
}
TIMED = ("feasible", "below_quality", "over_ceiling", "over_ram")
UNTIMED = ("oom", "pruned", "failed")


def _subplots(*grid: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Any, Any]:
    """A figure of its own: no pyplot, so the caller's backend and open figures are left alone
    (savefig renders PNG with Agg whatever the backend)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*grid, **kwargs)


def _unit(max_bytes: float) -> tuple[float, str]:
    return (2**30, "GiB") if max_bytes >= 2**30 else (2**20, "MiB") if max_bytes >= 2**20 else (2**10, "KiB")


def _scatter(ax: Any, rows: list[TrialRow], category: str, xs: list[float], ys: list[float],
             label: str | None = None, size: float = 46) -> None:
    marker, colour, filled = STYLE[category]
    ax.scatter(xs, ys, marker=marker, s=size, label=label, zorder=3, linewidths=1.4,
               facecolors=colour if filled else "none", edgecolors=colour)


def _label_points(ax: Any, xs: list[float], ys: list[float], rows: list[TrialRow]) -> None:
    """'#3' beside each point; points at the same place share one label ('#2 #3')."""
    groups: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for x, y, row in zip(xs, ys, rows):
        groups.setdefault((f"{x:.3g}", f"{y:.3g}"), []).append((x, y, row.number))
    for members in groups.values():
        x, y = members[0][0], members[0][1]
        ax.annotate(" ".join(f"#{n}" for _, _, n in sorted(members, key=lambda m: m[2])), (x, y),
                    textcoords="offset points", xytext=(5, 4), fontsize=7, color="#444444")


def _per_call_db(quality: dict[str, float]) -> float | None:
    """The per-call SQNR the floor reads (quality.per_call_sqnr), from a stored quality dict."""
    from autotune.measure.quality import per_call_sqnr
    from autotune.measure.records import QualityScores

    scores = QualityScores.from_dict(quality)
    return per_call_sqnr(scores) if scores is not None else None


def _latency_scale(ax: Any, latencies: list[float]) -> None:
    if latencies and min(latencies) > 0 and max(latencies) / min(latencies) > 8:
        ax.set_yscale("log")


def title_of(data: StudyRows) -> str:
    t = data.target
    if not t:
        return "autotune study"
    frames = f", {t['frames']} frames" if t.get("frames") else ""
    return (f"{t.get('model')} {t.get('width')}x{t.get('height')}{frames}, batch {t.get('batch')}, "
            f"{t.get('steps')} steps on {t.get('device')}")


def tradeoff_figure(data: StudyRows) -> Any:
    timed = [r for r in data.rows if r.category in TIMED and r.timed]
    untimed = [r for r in data.rows if r.category in UNTIMED or (r.category in TIMED and not r.timed)]
    ceiling = data.ceiling
    placed = [r for r in untimed if r.memory_hint(ceiling) is not None]
    unplaced = [r for r in untimed if r.memory_hint(ceiling) is None]
    data_max = max([r.peak_bytes for r in timed] + [r.memory_hint(ceiling) for r in placed] + [1])
    show_ceiling = ceiling and ceiling <= 1.6 * data_max
    scale, unit = _unit(max(data_max, ceiling if show_ceiling else 0))

    if placed or unplaced:
        fig, (ax, strip) = _subplots(2, 1, sharex=True, figsize=(9, 6.4),
                                        gridspec_kw={"height_ratios": [4, 1.1], "hspace": 0.08})
    else:
        fig, ax = _subplots(figsize=(9, 5.4))
        strip = None
    _timed_panel(ax, data, timed, scale)
    _ceiling_marks(ax, strip, ceiling, bool(show_ceiling), scale)
    if strip is not None:
        _untimed_strip(strip, placed, unplaced, ceiling, scale, unit)
        handles, labels = strip.get_legend_handles_labels()
        main_handles, main_labels = ax.get_legend_handles_labels()
        ax.legend(main_handles + handles, main_labels + labels, fontsize=8, loc="best")
    else:
        ax.set_xlabel(f"peak memory ({unit})")
        ax.legend(fontsize=8, loc="best")
    right = max(data_max, ceiling if show_ceiling else 0) / scale
    ax.set_xlim(0, right * 1.1)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.9, bottom=0.1)
    return fig


def _timed_panel(ax: Any, data: StudyRows, timed: list[TrialRow], scale: float) -> None:
    """The timed trials by outcome, the feasible Pareto front, the winner, axes and title."""
    for category in TIMED:
        rows = [r for r in timed if r.category == category]
        if rows:
            xs, ys = [r.peak_bytes / scale for r in rows], [r.latency_s for r in rows]
            _scatter(ax, rows, category, xs, ys, f"{LABELS[category]} ({len(rows)})")
            _label_points(ax, xs, ys, rows)
    front = data.pareto()
    if len(front) > 1:
        by_peak = sorted(front, key=lambda r: r.peak_bytes)
        ax.plot([r.peak_bytes / scale for r in by_peak], [r.latency_s for r in by_peak], drawstyle="steps-post",
                color=STYLE["feasible"][1], alpha=0.45, linewidth=1.6, zorder=2, label="Pareto front (feasible)")
    best = data.best()
    if best is not None:
        ax.scatter([best.peak_bytes / scale], [best.latency_s], marker="*", s=320, facecolors="none",
                   edgecolors="#2ca02c", linewidths=1.8, zorder=4, label=f"winner (#{best.number})")
    _latency_scale(ax, [r.latency_s for r in timed])
    ax.set_ylabel("latency, median (s)")
    ax.grid(True, alpha=0.3, which="both")
    metric = next((r.peak_metric for r in timed if r.peak_metric), None)
    ax.set_title(f"{title_of(data)}\nlatency vs peak memory{f' ({metric})' if metric else ''}", fontsize=10)


def _ceiling_marks(ax: Any, strip: Any | None, ceiling: int, show_ceiling: bool, scale: float) -> None:
    """The ceiling as a line on both panels, or only a legend entry when it is far to the right."""
    for axis in (ax, strip):
        if axis is not None and show_ceiling:
            axis.axvline(ceiling / scale, color="#d62728", linestyle="--", linewidth=1.2, zorder=1,
                         label=f"ceiling {format_size(ceiling)}" if axis is ax else None)
    if ceiling and not show_ceiling:  # a legend entry, not a line squeezing every point to the left
        ax.plot([], [], color="#d62728", linestyle="--", linewidth=1.2,
                label=f"ceiling {format_size(ceiling)} (off the chart, to the right)")


def _untimed_strip(strip: Any, placed: list[TrialRow], unplaced: list[TrialRow], ceiling: int, scale: float,
                   unit: str) -> None:
    """Trials never timed, one row per outcome, at the memory they asked for or were predicted to
    need; those with no memory reading named in a note."""
    positions = {c: i for i, c in enumerate(UNTIMED)}
    for category in UNTIMED:
        rows = [r for r in placed if r.category == category]
        if rows:
            xs = [r.memory_hint(ceiling) / scale for r in rows]
            _scatter(strip, rows, category, xs, [positions[category]] * len(rows),
                     f"{LABELS[category]} ({len(rows)})")
            _label_points(strip, xs, [positions[category]] * len(rows), rows)
    strip.set_yticks(range(len(UNTIMED)))
    strip.set_yticklabels(["out of memory\n(asked for)", "pruned\n(predicted)", "failed\n(predicted)"], fontsize=7)
    strip.set_ylim(-0.6, len(UNTIMED) - 0.4)
    strip.grid(True, axis="x", alpha=0.3)
    strip.set_xlabel(f"peak memory ({unit})")
    if unplaced:
        strip.annotate("no memory reading: " + ", ".join(f"#{r.number} {LABELS[r.category]}" for r in unplaced[:6])
                       + (" ..." if len(unplaced) > 6 else ""), xy=(0.01, 0.04), xycoords="axes fraction",
                       fontsize=7, color="#555555")


def prediction_figure(data: StudyRows) -> Any | None:
    """Predicted vs measured peak for trials with both; None when the planner predicted nothing."""
    rows = [r for r in data.rows if r.predicted_bytes is not None and r.peak_bytes is not None]
    if not rows:
        return None
    top = max(max(r.predicted_bytes for r in rows), max(r.peak_bytes for r in rows))
    scale, unit = _unit(top)
    fig, ax = _subplots(figsize=(6.6, 6))
    line = [0, top / scale * 1.08]
    ax.plot(line, line, color="#333333", linewidth=1, label="prediction = measurement")
    ax.fill_between(line, [v * 0.9 for v in line], [v * 1.1 for v in line], color="#999999", alpha=0.15,
                    label="\u00b110%")
    for category in TIMED:
        chosen = [r for r in rows if r.category == category]
        if chosen:
            xs, ys = [r.predicted_bytes / scale for r in chosen], [r.peak_bytes / scale for r in chosen]
            _scatter(ax, chosen, category, xs, ys, f"{LABELS[category]} ({len(chosen)})")
            _label_points(ax, xs, ys, chosen)
    if data.ceiling and data.ceiling <= top * 1.6:
        ax.axhline(data.ceiling / scale, color="#d62728", linestyle="--", linewidth=1.2,
                   label=f"ceiling {format_size(data.ceiling)}")
    errors = sorted(((r.predicted_bytes - r.peak_bytes) / r.peak_bytes, r.number) for r in rows if r.peak_bytes)
    if errors:
        worst = max(errors, key=lambda e: abs(e[0]))
        median = sorted(abs(e) for e, _ in errors)[len(errors) // 2]
        ax.annotate(f"median |error| {median:.1%}, worst {worst[0]:+.1%} (#{worst[1]})",
                    xy=(0.02, 0.97), xycoords="axes fraction", va="top", fontsize=9)
    pruned = len(data.by("pruned"))
    ax.set_xlabel(f"predicted peak ({unit})")
    ax.set_ylabel(f"measured peak ({unit})")
    ax.set_xlim(0, line[1])
    ax.set_ylim(0, line[1])
    ax.set_title(f"planner prediction vs measurement\n{title_of(data)}"
                 + (f"; {pruned} pruned, predicted only" if pruned else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def knob_figure(data: StudyRows) -> Any | None:
    """One column per searched knob: latency (top) and peak (bottom) of every timed trial by value,
    a bar at each value's median. Trials differ in several knobs at once, so read the medians as
    tendencies; the defaults trial is the dashed line."""
    timed = [r for r in data.rows if r.category in TIMED and r.timed]
    knobs = [k for k in data.space if len({repr(r.settings.get(k)) for r in timed if k in r.settings}) > 1]
    if not timed or not knobs:
        return None
    top = max(r.peak_bytes for r in timed)
    scale, unit = _unit(top)
    fig, axes = _subplots(2, len(knobs), figsize=(max(6.0, 2.3 * len(knobs)), 5.6), squeeze=False, sharey="row")
    baseline = next((r for r in timed if r.number == min(x.number for x in timed)), None)
    for col, knob in enumerate(knobs):
        values = [v for v in data.space[knob] if any(r.settings.get(knob) == v for r in timed)]
        for row_i, (metric, divide) in enumerate((("latency_s", 1.0), ("peak_bytes", scale))):
            ax = axes[row_i][col]
            for i, value in enumerate(values):
                rows = [r for r in timed if r.settings.get(knob) == value]
                ys = [getattr(r, metric) / divide for r in rows]
                xs = [i + _jitter(r.number) for r in rows]
                for category in TIMED:
                    pick = [(x, y, r) for x, y, r in zip(xs, ys, rows) if r.category == category]
                    if pick:
                        _scatter(ax, [p[2] for p in pick], category, [p[0] for p in pick], [p[1] for p in pick], size=26)
                median = sorted(ys)[len(ys) // 2] if len(ys) % 2 else sum(sorted(ys)[len(ys) // 2 - 1:len(ys) // 2 + 1]) / 2
                ax.hlines(median, i - 0.3, i + 0.3, color="#222222", linewidth=2, zorder=4)
            if baseline is not None:
                ax.axhline(getattr(baseline, metric) / divide, color="#2ca02c", linestyle=":", linewidth=1)
            ax.set_xticks(range(len(values)))
            counts = [sum(r.settings.get(knob) == v for r in timed) for v in values]
            ax.set_xticklabels([str(v) if row_i == 0 else f"{v}\nn={n}" for v, n in zip(values, counts)], fontsize=8)
            ax.set_xlim(-0.6, len(values) - 0.4)
            ax.grid(True, axis="y", alpha=0.3, which="both")
            if row_i == 0:
                ax.set_title(knob, fontsize=9)
        if col == 0:
            axes[0][0].set_ylabel("latency, median (s)")
            axes[1][0].set_ylabel(f"peak ({unit})")
    _latency_scale(axes[0][0], [r.latency_s for r in timed])
    present = [c for c in TIMED if any(r.category == c for r in timed)]
    if len(present) > 1:  # which marker is which, once
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker=STYLE[c][0], color=STYLE[c][1], linestyle="",
                          markerfacecolor=STYLE[c][1] if STYLE[c][2] else "none") for c in present]
        axes[0][-1].legend(handles, [LABELS[c] for c in present], fontsize=7, loc="best")
    axes[1][0].set_ylim(bottom=0)  # memory from zero: savings read at their true size
    if data.ceiling and data.ceiling <= top * 1.6:
        for ax in axes[1]:
            ax.axhline(data.ceiling / scale, color="#d62728", linestyle="--", linewidth=1)
    fig.suptitle(f"each knob's effect (bar: median; dotted: trial #{baseline.number if baseline else '-'}, "
                 f"the defaults)\n{title_of(data)}", fontsize=10)
    fig.tight_layout()
    return fig


def _jitter(number: int) -> float:
    """A fixed horizontal offset per trial, so equal values do not hide each other."""
    return ((number * 0.618034) % 1.0 - 0.5) * 0.36


def quality_figure(data: StudyRows) -> Any | None:
    """Latency against PSNR, and against the per-call SQNR where measured (else SSIM), to the
    reference; None without quality numbers."""
    rows = [r for r in data.rows if r.quality and r.latency_s is not None]
    if not rows:
        return None
    fig, axes = _subplots(1, 2, figsize=(10, 4.6), sharey=True)
    reference = f"{data.reference_dtype} reference" if data.reference_dtype else "reference"
    per_call = {id(r): _per_call_db(r.quality) for r in rows}
    second = ((lambda r: per_call[id(r)]), f"SQNR per call to the {reference} (dB; the lower of denoiser and VAE)") \
        if any(v is not None for v in per_call.values()) else \
        ((lambda r: r.quality.get("ssim")), f"SSIM to the {reference} (1 = identical)")
    for ax, value, name in ((axes[0], lambda r: r.quality.get("psnr_db"),
                             f"PSNR to the {reference} (dB; 100 = identical)"), (axes[1], *second)):
        for category in TIMED:
            chosen = [r for r in rows if r.category == category and value(r) is not None]
            if chosen:
                xs, ys = [value(r) for r in chosen], [r.latency_s for r in chosen]
                _scatter(ax, chosen, category, xs, ys, f"{LABELS[category]} ({len(chosen)})")
                _label_points(ax, xs, ys, chosen)
        ax.set_xlabel(name, fontsize=9)
        ax.margins(x=0.08)
        ax.ticklabel_format(axis="x", useOffset=False)
        ax.grid(True, alpha=0.3, which="both")
    if data.min_psnr is not None:
        axes[0].axvline(data.min_psnr, color="#9467bd", linestyle="--", linewidth=1.2,
                        label=f"image floor {data.min_psnr:g} dB (settings judged end to end)"
                        if data.min_sqnr is not None else f"quality floor {data.min_psnr:g} dB")
    if per_call and data.min_sqnr is not None:
        axes[1].axvline(data.min_sqnr, color="#9467bd", linestyle="--", linewidth=1.2,
                        label=f"per-call floor {data.min_sqnr:g} dB (lossy settings)")
        axes[1].legend(fontsize=8, loc="best")
    _latency_scale(axes[0], [r.latency_s for r in rows])
    axes[0].set_ylabel("latency, median (s)")
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"what each setting costs in image quality\n{title_of(data)}", fontsize=10)
    fig.tight_layout()
    return fig

