"""The CLI as a user meets it: one-line errors with exit 2, and the whole loop end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from autotune.profile import Profile, ProfileEntry
from autotune.target import Target


def autotune(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "autotune.cli.main", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("autotune: error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["--max-vram", "8"], ["'8GB'", "got '8'"]),
    (["--max-vram", "-1GB"], ["--max-vram", "got '-1GB'"]),
    (["--max-vram", "0GB"], ["larger than zero"]),
    (["--max-vram", "2GB", "--height", "100"], ["multiple of 8", "got 100", "try 96 or 104"]),
    (["--max-vram", "2GB", "--batch", "0"], ["--batch must be 1 or more"]),
    (["--max-vram", "2GB", "--model", "no-such-org/no-such-model"], ["cannot find model", "builtin:tiny-sd"]),
    (["--max-vram", "2GB", "--model", "builtin:sd3"], ["unknown built-in model"]),
    (["--max-vram", "2GB", "--device", "tpu"], ["--device must be one of"]),
    (["--max-vram", "2GB", "--device", "cuda"], ["no CUDA GPU is visible", "--device cpu"]),
    (["--max-vram", "2GB", "--exclude", "dtype=fp64"], ["dtype takes one of"]),
    (["--max-vram", "2GB", "--height", "abc"], ["invalid int value"]),
    (["--trials", "3"], ["--max-vram"]),
    (["--max-vram", "2GB", "--trials", "0"], ["--trials must be 1 or more"]),
    (["--max-vram", "2GB", "--timeout", "-5"], ["--timeout must be more than 0"]),
    (["--max-vram", "2GB", "--resume"], ["nothing to resume"]),
])
def test_search_input_errors_are_one_line(tmp_path, args, fragments):
    proc = autotune("search", *args, "--out", str(tmp_path / "p.yaml"), "--run-dir", str(tmp_path / "run"))
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "p.yaml").exists()


def test_unwritable_out_is_refused_before_searching(tmp_path):
    common = ["search", "--max-vram", "2GB", "--run-dir", str(tmp_path / "run")]
    assert_one_line_error(autotune(*common, "--out", str(tmp_path / "p.txt")), "must end in .yaml or .yml")
    (tmp_path / "d.yaml").mkdir()
    assert_one_line_error(autotune(*common, "--out", str(tmp_path / "d.yaml")), "is a folder")
    (tmp_path / "file").write_text("")
    assert_one_line_error(autotune(*common, "--out", str(tmp_path / "file" / "p.yaml")), "not a writable folder")
    assert not (tmp_path / "run").exists()  # refused before any study was created
    profile = tmp_path / "p.yaml"
    Profile(target=Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=1, max_vram=2**30),
            fingerprint={}, best=ProfileEntry(settings={}, latency_median_s=1.0, latency_p90_s=1.0,
                                              peak_bytes=1, peak_metric="x", runs=1)).save(profile)
    assert_one_line_error(autotune("apply", str(profile), "--out", str(tmp_path / "file" / "x.png")),
                          "not a writable folder")


def test_corrupt_profile_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nsettings: [unclosed\n")
    assert_one_line_error(autotune("show", str(bad)), "not valid YAML")
    assert_one_line_error(autotune("apply", str(bad), "--out", str(tmp_path / "x.png")), "not valid YAML")
    assert_one_line_error(autotune("show", str(tmp_path / "missing.yaml")), "does not exist")


def test_debug_shows_the_traceback(tmp_path):
    proc = autotune("--debug", "show", str(tmp_path / "missing.yaml"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_search_show_apply_end_to_end(tmp_path):
    out = tmp_path / "profiles" / "tiny.yaml"
    common = ["--height", "64", "--width", "64", "--steps", "2", "--run-dir", str(tmp_path / "run"),
              "--runs", "1"]
    proc = autotune("search", "--max-vram", "2GB", "--trials", "2", "--out", str(out), *common)
    assert proc.returncode == 0, proc.stderr
    assert "profile written to" in proc.stdout and "trial" in proc.stdout
    assert "ceiling 2.00 GiB (2147483648 bytes)" in proc.stderr
    profile = Profile.load(out)
    assert profile.target.max_vram == 2 * 2**30 and profile.search["trials_measured"] == 2
    assert profile.best.peak_metric == "cpu_live_tensor_peak"

    shown = autotune("show", str(out))
    assert shown.returncode == 0 and "cpu_live_tensor_peak" in shown.stdout
    as_json = json.loads(autotune("show", str(out), "--json").stdout)
    assert as_json["settings"] == profile.settings

    resumed = autotune("search", "--max-vram", "2GB", "--trials", "1", "--out", str(out), "--resume", *common)
    assert resumed.returncode == 0, resumed.stderr
    assert Profile.load(out).search["trials_measured"] == 3

    png = tmp_path / "img.png"
    applied = autotune("apply", str(out), "--out", str(png))
    assert applied.returncode == 0, applied.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ceiling_too_low_writes_no_profile(tmp_path):
    out = tmp_path / "p.yaml"
    proc = autotune("search", "--max-vram", "1MB", "--trials", "1", "--height", "64", "--width", "64",
                    "--steps", "1", "--runs", "1", "--out", str(out), "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert "no trial fits under the 1.00 MiB ceiling" in proc.stderr
    assert "predicted over it by the planner" in proc.stderr and "raise --max-vram" in proc.stderr
    assert not out.exists()


def test_all_trials_failing_is_not_blamed_on_the_ceiling(tmp_path):
    proc = autotune("search", "--max-vram", "2GB", "--trials", "1", "--timeout", "0.2", "--out",
                    str(tmp_path / "p.yaml"), "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # after the header and the progress bar
    assert last.startswith("autotune: error: all 1 measured trials failed (first: timed out after 0 s)")
    assert "the trial logs are in" in last and "raise --max-vram" not in last
    assert not (tmp_path / "p.yaml").exists()


def test_knobs_and_probe_without_gpu():
    proc = autotune("knobs", "--device", "cpu", "--json")
    rows = json.loads(proc.stdout)
    offload = [r for r in rows if r["knob"] == "offload" and r["value"] == "model"][0]
    assert offload["state"] == "unavailable" and "accelerator" in offload["reason"]
    probe = autotune("probe")
    assert probe.returncode == 0 and "no GPU found" in probe.stdout


def test_plan_lists_predictions_without_running_anything():
    proc = autotune("plan", "--model", "builtin:tiny-sd", "--device", "cpu", "--max-vram", "8MB", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["candidates"] == len(plan["plans"]) == 96
    fits = {p["settings"]["dtype"]: p["fits"] for p in plan["plans"] if not p["settings"]["layerwise_fp8"]}
    assert fits == {"fp32": False, "fp16": True, "bf16": True}  # 11.2 MiB vs 5.6 MiB at 128 px
    assert plan["plans"][0]["fits"] and plan["plans"][-1]["fits"] is False  # feasible listed first
    text = autotune("plan", "--model", "builtin:tiny-sd", "--max-vram", "4GB", "--top", "3")
    assert text.returncode == 0 and "VAE decode" in text.stdout and "... " in text.stdout
    assert_one_line_error(autotune("plan", "--max-vram", "4GB", "--top", "0"), "--top must be 1 or more")
    assert_one_line_error(autotune("plan", "--max-vram", "8"), "got '8'")
