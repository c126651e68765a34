"""benchmarks/gpu_session.sh: each part fits a GPU loan's limits and says when a step failed.

The shell's plumbing runs with a stand-in interpreter that does nothing (fast: every Python step
"passes" at once, a step is made to fail with AUTOTUNE_SESSION_FAIL). The CPU dress rehearsal
runs the real steps on builtin:tiny-sd (slow tier, CI: a few minutes on 2 cores).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"
MAX_FILES = 8  # what one device command brings back
LOAN_S = 510  # 8.5 minutes per part, install included


def run_session(part: str, out: Path, run_dir: Path, python: str = sys.executable,
                **env: str) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTUNE_SESSION_")}
    environ = {**inherited, "AUTOTUNE_REHEARSAL": "1", "OUT": str(out), "AUTOTUNE_SESSION_RUN_DIR": str(run_dir),
               "PYTHON": python, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(["bash", str(SCRIPT), part], env=environ, capture_output=True, text=True, timeout=1200)


def session_text(out: Path, part: str) -> str:
    return next(out.glob(f"*-{part}-session.md")).read_text()


@pytest.fixture
def stub_python(tmp_path: Path) -> tuple[str, Path]:
    """An interpreter that only records its arguments: the script's steps without their cost."""
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\nexit 0\n')
    stub.chmod(0o755)
    return str(stub), calls


@pytest.fixture
def compiling_stub(tmp_path: Path) -> tuple[str, Path]:
    """As stub_python, but its 4GB search leaves a profile whose winner compiles, and its warmup
    writes a record into the profile it is given (as `autotune warmup` does)."""
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    stub.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
case "$*" in
    *"--ceilings 4GB"*) echo "compile: full" > "$OUT/stub-part2-4gb.yaml" ;;
    *Profile.load*) echo full ;;
    *" warmup "*) echo "compile_artifacts: warmed" >> "$4" ;;
esac
""")
    stub.chmod(0o755)
    return str(stub), calls


def test_part2_warms_up_a_compiled_winner_on_a_copy_and_keeps_the_record(tmp_path, compiling_stub):
    python, calls = compiling_stub
    proc = run_session("part2", tmp_path / "out", tmp_path / "run", python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "- warmup: ok" in session_text(tmp_path / "out", "part2")
    warmup_call = next(line for line in calls.read_text().splitlines() if " warmup " in line)
    assert str(tmp_path / "run" / "warmup" / "profile.yaml") in warmup_call  # not the file in OUT
    assert "compile_artifacts: warmed" in (tmp_path / "out" / "stub-part2-4gb.yaml").read_text()


def test_a_warmup_cut_short_still_keeps_what_it_wrote_into_the_profile(tmp_path, compiling_stub):
    python, calls = compiling_stub
    stub = Path(python)  # its warmup writes the cold record, then fails (as a timed-out second process)
    stub.write_text(stub.read_text().replace('>> "$4" ;;', '>> "$4"; exit 124 ;;'))
    proc = run_session("part2", tmp_path / "out", tmp_path / "run", python)
    assert proc.returncode == 1
    assert "- warmup: **FAILED**: timed out" in session_text(tmp_path / "out", "part2")
    assert "compile_artifacts: warmed" in (tmp_path / "out" / "stub-part2-4gb.yaml").read_text()


def test_a_failed_step_fails_the_part_but_the_later_steps_still_run(tmp_path, stub_python):
    python, calls = stub_python
    proc = run_session("part1", tmp_path / "out", tmp_path / "run", python, AUTOTUNE_SESSION_FAIL="search_cost")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = session_text(tmp_path / "out", "part1")
    assert "- search_cost: **FAILED** (exit 3)" in text
    assert "- search_8gb: ok" in text and "part1 FAILED" in text and "search_cost" in text.splitlines()[-1]
    assert "search_cost.py" not in calls.read_text()  # the injected failure replaced it
    assert "gpu_check.py" in calls.read_text()


def test_a_failed_preflight_stops_the_part(tmp_path, stub_python):
    python, calls = stub_python
    proc = run_session("part2", tmp_path / "out", tmp_path / "run", python, AUTOTUNE_SESSION_FAIL="preflight")
    assert proc.returncode == 1
    text = session_text(tmp_path / "out", "part2")
    assert "- preflight: **FAILED**" in text and "ladder" not in text
    assert "gpu_check.py" not in calls.read_text()


STEPS = {"part1": ["preflight", "search_cost", "search_8gb"], "part2": ["preflight", "ladder", "search_4gb"],
         "part3": ["preflight", "quant_sdxl_8gb", "graphs_8gb"]}


@pytest.mark.parametrize("part", sorted(STEPS))
def test_each_part_budgets_at_most_a_loan_and_passes_when_its_steps_do(tmp_path, stub_python, part):
    python, calls = stub_python
    proc = run_session(part, tmp_path / "out", tmp_path / "run", python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = session_text(tmp_path / "out", part)
    budget = int(re.search(r"budget: (\d+) s of 510 s", text).group(1))
    assert budget <= LOAN_S
    steps = re.findall(r"^- (\w+): ok in \d+ s of its (\d+) s", text, re.M)
    assert [name for name, _ in steps] == STEPS[part]
    assert sum(int(limit) for _, limit in steps) < budget  # install and packing are the rest
    assert f"{part} passed" in text
    assert len(list((tmp_path / "out").iterdir())) <= MAX_FILES
    if part == "part2":
        assert "- warmup: skipped" in text  # no 4GB profile, so nothing compiles


def test_an_unknown_part_is_refused(tmp_path):
    assert run_session("part4", tmp_path / "out", tmp_path / "run").returncode == 2


# -- the dress rehearsal: the real steps on CPU ---------------------------------------------------

def _rehearse(tmp_path_factory: pytest.TempPathFactory, part: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    base = tmp_path_factory.mktemp(part)
    return run_session(part, base / "out", base / "run"), base / "out"


@pytest.fixture(scope="module")
def part1(tmp_path_factory):
    return _rehearse(tmp_path_factory, "part1")


@pytest.fixture(scope="module")
def part2(tmp_path_factory):
    return _rehearse(tmp_path_factory, "part2")


@pytest.fixture(scope="module")
def part3(tmp_path_factory):
    return _rehearse(tmp_path_factory, "part3")


def _one(out: Path, pattern: str) -> Path:
    found = list(out.glob(pattern))
    assert len(found) == 1, (pattern, sorted(p.name for p in out.iterdir()))
    assert found[0].stat().st_size > 0
    return found[0]


def _logs_without_caches(out: Path, part: str) -> None:
    with tarfile.open(_one(out, f"*-{part}-logs.tgz")) as tar:
        names = tar.getnames()
    assert any(n.endswith(".log") for n in names)
    assert not any("inductor-cache" in n or "references" in n for n in names)


@pytest.mark.slow
def test_rehearsal_of_part1(part1):
    proc, out = part1
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list(out.iterdir())) <= MAX_FILES
    text = session_text(out, "part1")
    assert "device: CPU" in text and "versions: python" in text and "torch " in text
    assert "- preflight: ok" in text and "- search_cost: ok" in text and "- search_8gb: ok" in text
    _one(out, "*-search-cost-*-tiny-sd.md")
    cost = json.loads(_one(out, "*-search-cost-*-tiny-sd.json").read_text())
    assert cost["searches"][0]["short"]["rows"] and cost["spread"]["trials_ok"] >= 2
    assert all(r["worker_reused"] for r in cost["spread"]["rows"][1:])
    _one(out, "*-part1.md")
    _one(out, "*-part1-8gb.yaml")
    search = json.loads(_one(out, "*-part1.json").read_text())["searches"][0]
    hand = search["hand_choice"]["measurement"]
    assert hand["status"] == "ok"
    # measured inside the search's share, by the warm worker the search's first trial then used
    assert hand["device_info"]["worker_pid"] == search["records"][0]["measurement"]["device_info"]["worker_pid"]
    assert search["profile_over_hand"] > 0
    _logs_without_caches(out, "part1")


@pytest.mark.slow
def test_rehearsal_of_part2(part2):
    proc, out = part2
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list(out.iterdir())) <= MAX_FILES
    text = session_text(out, "part2")
    assert "- ladder: ok" in text and "- search_4gb: ok" in text
    assert "- warmup: skipped" in text  # on CPU the search leaves compile out: no compiled winner
    _one(out, "*-part2-ladder.md")
    ladder = json.loads(_one(out, "*-part2-ladder.json").read_text())
    assert [r["measurement"]["status"] for r in ladder["ladder"] if "measurement" in r] == ["ok", "ok", "ok"]
    assert ladder["searches"] == []
    _one(out, "*-part2.md")
    _one(out, "*-part2-4gb.yaml")
    assert json.loads(_one(out, "*-part2.json").read_text())["ladder"] == []
    _logs_without_caches(out, "part2")


@pytest.mark.slow
def test_rehearsal_with_a_model_that_does_not_exist_stops_at_the_preflight(tmp_path):
    proc = run_session("part1", tmp_path / "out", tmp_path / "run", AUTOTUNE_SESSION_MODEL="builtin:nope")
    assert proc.returncode == 1
    text = session_text(tmp_path / "out", "part1")
    assert "unknown built-in model 'builtin:nope'" in text and "- preflight: **FAILED** (exit 1)" in text
    assert "search_cost" not in text and not list((tmp_path / "out").glob("*search-cost*"))


@pytest.mark.slow
def test_rehearsal_of_part3(part3):
    """On CPU without bitsandbytes or CUDA graphs: the two searches against their hand choices."""
    proc, out = part3
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list(out.iterdir())) <= MAX_FILES
    text = session_text(out, "part3")
    assert "- quant_sdxl_8gb: ok" in text and "- graphs_8gb: ok" in text
    for tag in ("part3-quant", "part3-graphs"):
        _one(out, f"*-{tag}.md")
        search = json.loads(_one(out, f"*-{tag}.json").read_text())["searches"][0]
        assert search["hand_choice"]["measurement"]["status"] == "ok"
    _logs_without_caches(out, "part3")
