"""The CLI as a user meets it, end to end; the in-process helpers the other CLI tests share.

Error paths live in test_cli_errors.py (in-process, a table). Here: the few runs that need the
real entry point (a subprocess) or the whole search -> show -> apply loop.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from autotune import knobs
from autotune.profiles.profile import Profile, ProfileEntry
from autotune.target import Target


# -- helpers (imported by test_cli_*.py) -------------------------------------------------------

@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str

    def one_line_error(self, *fragments: str) -> str:
        """The single error line, after checking exit code 2, one line, no traceback."""
        assert self.code == 2, (self.code, self.err)
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("autotune: error: ") and "Traceback" not in self.err
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
        return lines[0]


def cli(capsys, *args: object) -> Run:
    """`autotune ARGS` in this process: exit code, stdout, stderr."""
    from autotune.cli.main import main

    capsys.readouterr()
    environ = dict(os.environ)  # main() may set defaults (TRANSFORMERS_VERBOSITY): keep them here
    try:
        code = main([str(a) for a in args])
    finally:
        os.environ.clear()
        os.environ.update(environ)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def tiny_profile(settings: dict | None = None, *, max_vram: int = 2**30, latency: float = 1.0,
                 peak: int = 2**20, device: str = "cpu", device_name: str = "Test CPU",
                 height: int = 64, batch: int = 1, versions: dict | None = None) -> Profile:
    full = {**{k.name: k.default for k in knobs.all_knobs()}, **(settings or {})}
    return Profile(
        target=Target(model="builtin:tiny-sd", height=height, width=64, batch=batch, steps=2,
                      max_vram=max_vram, device=device, pipeline_class="StableDiffusionPipeline"),
        fingerprint={"device": device, "device_name": device_name,
                     "versions": versions or {"torch": "2.13.0", "diffusers": "0.42.1"}},
        best=ProfileEntry(settings=full, latency_median_s=latency, latency_p90_s=latency * 1.1,
                          peak_bytes=peak, peak_metric="cpu_live_tensor_peak", runs=3),
        search={"trials_measured": 4},
    )


def listing(folder: Path) -> list[str]:
    """Every path under `folder`, to show a command wrote nothing."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


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
