"""autotune report: trials read back from a study (every outcome its own category), the pictures,
one self-contained HTML page, the study found from a profile or a run directory, the CLI."""
from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from helpers.fakes import FakeMeasurer
from helpers.searches import MiB, cost, small_space, target

from autotune.measure.records import MemoryReadings
from autotune.errors import StudyError
from autotune.measure.measurer import Measurement
from autotune.planner.prediction import Prediction
from autotune.report import build_report
from autotune.report.source import locate
from autotune.report.trials import study_rows
from autotune.search.study import Search
from autotune.search.ledger import open_storage
from autotune.jobs import profile_from

pytest.importorskip("matplotlib")
pytest.importorskip("plotly")
pytest.importorskip("pandas")

CEILING = 65 * MiB
PNG = b"\x89PNG\r\n\x1a\n"


def FakePrediction(total_bytes: int) -> Prediction:
    """All of it activations of the VAE decode: the lower bound is the total."""
    return Prediction(total_bytes=total_bytes, peak_phase="VAE decode", resident_weights_bytes=0,
                      activation_bytes=total_bytes, workspace_bytes=0, allocator_bytes=0, runtime_bytes=0,
                      phases={"VAE decode": total_bytes}, metric="fake_peak")


class FakePlanner:
    """Predicts 5% below the fake cost, and far over the ceiling for plain fp32 (pruned)."""

    def predict(self, a):
        if a["dtype"] == "fp32" and not a["vae_slicing"]:
            return FakePrediction(500 * MiB)
        return FakePrediction(int(cost(a)[1] * 0.95))


def outcomes(a):
    """fp32+slicing over the ceiling, bf16 out of memory, bf16+slicing crashes, fp16 both fit."""
    if a["dtype"] == "bf16" and not a["vae_slicing"]:
        return Measurement(status="oom", backend="fake", device_name="fake", peak_metric="fake_peak",
                           memory=MemoryReadings(oom_excess_bytes=20 * MiB), error="OutOfMemoryError")
    if a["dtype"] == "bf16":
        return Measurement.failure("worker killed by SIGKILL")
    return cost(a)


@pytest.fixture
def searched(tmp_path):
    """A finished fake search with every outcome but the quality floor, and its profile."""
    search = Search(target(CEILING), small_space(), FakeMeasurer(outcomes), storage=tmp_path / "run" / "studies.journal",
                    planner=FakePlanner())
    result = search.run(10)
    profile = profile_from(result)
    path = profile.save(tmp_path / "p.yaml")
    return search, path


def by_settings(rows):
    return {(r.settings["dtype"], r.settings["vae_slicing"]): r.category for r in rows}


def test_every_outcome_is_its_own_category(searched):
    search, _ = searched
    data = study_rows(search.study)
    assert by_settings(data.rows) == {
        ("fp32", False): "pruned", ("fp32", True): "over_ceiling", ("fp16", False): "feasible",
        ("fp16", True): "feasible", ("bf16", False): "oom", ("bf16", True): "failed"}
    assert data.ceiling == CEILING and data.space == {"dtype": ["fp32", "fp16", "bf16"], "vae_slicing": [False, True]}
    oom = data.by("oom")[0]
    assert oom.memory_hint(CEILING) == 85 * MiB  # what it asked for: ceiling + excess
    assert data.by("pruned")[0].memory_hint(CEILING) == 500 * MiB
    assert [(r.settings["dtype"], r.settings["vae_slicing"]) for r in data.pareto()] == [("fp16", False), ("fp16", True)]
    assert data.best().settings["dtype"] == "fp16" and not data.best().settings["vae_slicing"]
    assert data.by("feasible")[0].predicted_bytes is not None


def test_report_from_a_profile_writes_pngs_csv_and_one_self_contained_html(searched, tmp_path):
    _, path = searched
    report = build_report(path, tmp_path / "out")
    assert report.source.study_name == searched[0].study_name
    for name in ("tradeoff", "prediction", "knobs"):
        assert report.files[name].read_bytes()[:8] == PNG and report.files[name].stat().st_size > 10_000
    assert "quality" not in report.files and any(s.startswith("quality:") for s in report.skipped)
    csv = report.files["trials"].read_text().splitlines()
    assert csv[0].startswith("trial,outcome,latency_s,peak_mib,predicted_mib") and len(csv) == 7
    page = report.files["html"].read_text()
    assert page.count("<img alt=") == 3 and page.count("alt=\"Planner prediction vs measurement\" src=\"data:image/png;base64,") == 1
    assert "<script src=\"http" not in page and "Plotly.newPlot" in page  # plotly.js inline, once
    assert page.count("plotly.js v") <= 2
    for label in ("pruned by the planner", "out of memory", "over the ceiling", "failed", "feasible"):
        assert label in page
    assert "Pareto front (Optuna)" in page and "65.00 MiB" in page and "p.yaml" in page


def test_tradeoff_marks_each_outcome_and_the_ceiling(searched):
    from autotune.report.plots import prediction_figure, tradeoff_figure

    data = study_rows(searched[0].study)
    figure = tradeoff_figure(data)
    labels = figure.axes[0].get_legend().get_texts()
    text = [t.get_text() for t in labels]
    for expected in ("feasible (2)", "over the ceiling (1)", "out of memory (1)", "failed (1)",
                     "pruned by the planner (1)", "Pareto front (feasible)", "ceiling 65.00 MiB"):
        assert expected in text, text
    assert any(t.startswith("winner (#") for t in text)
    markers = {c.get_label(): c.get_paths()[0].vertices.tobytes() for ax in figure.axes for c in ax.collections
               if c.get_label() and not c.get_label().startswith("_")}
    shapes = [markers[k] for k in markers if not k.startswith("winner")]
    assert len(set(shapes)) == len(shapes)  # one marker shape per outcome
    prediction = prediction_figure(data)
    assert "median |error| 5.0%" in " ".join(t.get_text() for t in prediction.axes[0].texts)


def quality_study(storage_path, name="quality"):
    """A hand-written study as a search with the quality guard stores it: quality per trial, the
    floor as a study attribute; one trial under the floor marked by the guard, one stored without an
    outcome (an older study) judged by its PSNR."""
    study = optuna.create_study(study_name=name, storage=open_storage(storage_path),
                                directions=["minimize", "minimize"])
    study.set_user_attr("target", target(CEILING).to_dict())
    study.set_user_attr("space", {"dtype": ["fp32", "fp16", "bf16"], "vae_slicing": [False, True]})
    study.set_user_attr("autotune:min_psnr", 30.0)
    study.set_user_attr("autotune:reference", {"dtype": "bf16"})
    dist = {"dtype": optuna.distributions.CategoricalDistribution(["fp32", "fp16", "bf16"]),
            "vae_slicing": optuna.distributions.CategoricalDistribution([False, True])}
    for dtype, slicing, psnr, outcome in (("fp32", False, 100.0, "over_ceiling"), ("fp16", False, 24.0, None),
                                          ("bf16", False, 18.0, "below_quality"), ("fp16", True, 35.0, "feasible")):
        latency, peak = cost({"dtype": dtype, "vae_slicing": slicing})
        settings = {**small_space().default(), "dtype": dtype, "vae_slicing": slicing}
        measurement = {"status": "ok", "backend": "fake", "device_name": "fake", "peak_metric": "fake_peak",
                       "latencies_s": [latency] * 3, "peak_bytes": peak,
                       "quality": {"psnr_db": psnr, "ssim": psnr / 100, "latent_rel_error": 1 / psnr,
                                   "denoiser_sqnr_db": psnr + 10}}
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, values=[latency, peak], params={"dtype": dtype, "vae_slicing": slicing},
            distributions=dist, system_attrs={"constraints": [(peak - CEILING) / CEILING]},
            user_attrs={"assignment": settings, "measurement": measurement,
                        **({"outcome": outcome} if outcome else {})}))
    return study


def test_quality_below_the_floor_is_marked_and_plotted(tmp_path):
    journal = tmp_path / "run" / "studies.journal"
    study = quality_study(journal)
    data = study_rows(study)
    assert by_settings(data.rows) == {("fp32", False): "over_ceiling", ("fp16", False): "below_quality",
                                      ("bf16", False): "below_quality", ("fp16", True): "feasible"}
    assert data.min_psnr == 30.0 and data.best().settings == {**small_space().default(), "dtype": "fp16", "vae_slicing": True}
    report = build_report(tmp_path / "run", tmp_path / "out")
    assert report.files["quality"].read_bytes()[:8] == PNG
    page = report.files["html"].read_text()
    assert "below the quality floor" in page and "PSNR &gt;= 30 dB" in page
    # the reference is named by what it was (the study's --reference-dtype), never "exact"
    assert "against the bf16 reference" in page and "exact reference" not in page
    header = report.files["trials"].read_text().splitlines()[0].split(",")
    assert {"psnr_db", "ssim", "latent_rel_error", "denoiser_sqnr_db"} <= set(header)
    from autotune.report.plots import quality_figure

    figure = quality_figure(data)
    assert "quality floor 30 dB" in [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert figure.axes[0].get_xlabel().startswith("PSNR to the bf16 reference")


def test_a_run_dir_gives_its_latest_study_and_study_picks_another(searched, tmp_path):
    search, path = searched
    journal = tmp_path / "run" / "studies.journal"
    quality_study(journal, name="zz-later")
    assert locate(tmp_path / "run").study_name == "zz-later"
    assert locate(tmp_path / "run", search.study_name).study_name == search.study_name
    assert locate(path).study_name == search.study_name  # the profile names its own study
    with pytest.raises(StudyError, match=r"no study 'nope' in .*it holds: .*zz-later"):
        locate(tmp_path / "run", "nope")
    with pytest.raises(StudyError, match="no studies.journal in"):
        locate(tmp_path)
    with pytest.raises(StudyError, match="does not exist"):
        locate(tmp_path / "missing")


def test_a_profile_whose_study_moved_is_found_beside_it(searched, tmp_path):
    _, path = searched
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (tmp_path / "run" / "studies.journal").rename(moved / "studies.journal")
    (moved / "p.yaml").write_text(path.read_text())
    assert locate(moved / "p.yaml").storage == str(moved / "studies.journal")
    with pytest.raises(StudyError, match="which is not here"):
        locate(path)


def test_cli_report(searched, tmp_path, capsys):
    from helpers.cli import cli

    _, path = searched
    run = cli(capsys, "report", path)
    assert run.code == 0, run.err
    out_dir = tmp_path / "p-report"
    assert f"wrote    {out_dir / 'report.html'}" in run.out and "1 pruned by the planner" in run.out
    assert (out_dir / "tradeoff.png").exists() and "PedAnova" not in run.err
    missing = cli(capsys, "report", tmp_path / "nope.yaml")
    assert missing.code == 2 and "does not exist" in missing.err and len(missing.err.strip().splitlines()) == 1


def test_import_autotune_report_stays_light():
    code = "import sys, autotune.report; print(sorted(m for m in ('matplotlib', 'plotly', 'pandas', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
