"""The CLI as a user meets it, end to end; the in-process helpers the other CLI tests share.

Error paths live in test_cli_errors.py (in-process, a table). Here: the few runs that need the
real entry point (a subprocess) or the whole search -> show -> apply loop.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers.cli import cli, listing
from autotune.profiles.profile import Profile


# -- helpers (imported by test_cli_*.py) -------------------------------------------------------


def autotune(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "autotune.cli.main", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


# -- the real entry point ----------------------------------------------------------------------

def test_entry_point_version_and_a_one_line_error(tmp_path):
    """One subprocess: what the shell sees (exit codes, streams), no torch import for either."""
    proc = autotune("--version")
    assert proc.returncode == 0 and proc.stdout.strip().startswith("autotune ")
    proc = autotune("search", "--max-vrma", "2GB", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("autotune: error: unknown flag --max-vrma; did you mean --max-vram? "
                           "(see `autotune search --help`)\n")
    assert listing(tmp_path) == []


# -- the whole loop ----------------------------------------------------------------------------

# the fast tier's end-to-end run is tests/test_any_pipeline.py (sd); this one adds the console entry point
@pytest.mark.slow  # 15-30 s on 2 CPU cores: the fast tier keeps under 5 minutes
def test_search_show_apply_end_to_end(tmp_path, capsys):
    """One real trial (a worker process, ~20-40 s on 2 busy cores); resuming is test_study's."""
    out = tmp_path / "profiles" / "tiny.yaml"
    common = ["--height", "64", "--width", "64", "--steps", "2", "--run-dir", tmp_path / "run",
              "--runs", "1", "--device", "cpu"]
    run = cli(capsys, "search", "--max-vram", "2GB", "--trials", "1", "--out", out, *common)
    assert run.code == 0, run.err
    assert str(out) in run.out
    profile = Profile.load(out)
    assert profile.target.max_vram == 2 * 2**30 and profile.search.trials_measured == 1
    assert profile.best.peak_metric == "cpu_live_tensor_peak"

    shown = cli(capsys, "show", out)
    assert shown.code == 0 and "cpu_live_tensor_peak" in shown.out
    assert json.loads(cli(capsys, "show", out, "--json").out)["settings"] == profile.settings

    listed = cli(capsys, "profiles", out.parent)
    assert listed.code == 0 and "tiny.yaml" in listed.out and "64x64" in listed.out

    png = tmp_path / "img.png"
    applied = cli(capsys, "apply", out, "--out", png)
    assert applied.code == 0, applied.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in applied.out


@pytest.mark.slow  # 15-30 s on 2 CPU cores: the fast tier keeps under 5 minutes
def test_ceiling_too_low_writes_no_profile(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    run = cli(capsys, "search", "--max-vram", "1MB", "--trials", "1", "--height", "64", "--width", "64",
              "--steps", "1", "--runs", "1", "--device", "cpu", "--out", out, "--run-dir", tmp_path / "run")
    assert run.code == 2 and "Traceback" not in run.err
    last = run.err.strip().splitlines()[-1]
    assert "no trial fits under the 1.00 MiB ceiling" in last and "raise --max-vram" in last
    assert not out.exists()


def test_all_trials_failing_is_not_blamed_on_the_ceiling(tmp_path, capsys):
    run = cli(capsys, "search", "--max-vram", "2GB", "--trials", "1", "--timeout", "0.2", "--device", "cpu",
              "--out", tmp_path / "p.yaml", "--run-dir", tmp_path / "run")
    assert run.code == 2 and "Traceback" not in run.err
    last = run.err.strip().splitlines()[-1]  # after the header and the progress
    assert last.startswith("autotune: error: all 1 measured trials failed (first: timed out after 0 s)")
    assert "the trial logs are in" in last and "raise --max-vram" not in last
    assert not (tmp_path / "p.yaml").exists()
