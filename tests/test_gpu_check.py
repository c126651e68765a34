"""benchmarks/gpu_check.py runs end to end on CPU (the smoke test CI runs)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow  # 40 s of real trials
def test_gpu_check_cpu_smoke(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--model", "builtin:tiny-sd", "--smoke",
         "--ceilings", "2GB", "1KB", "--out-dir", str(tmp_path), "--run-dir", str(tmp_path / "run"),
         "--budget-s", "3000"],  # the flow, not the budget: a loaded CPU must not cut a search short
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = next(tmp_path.glob("*-smoke.md"))
    raw = json.loads(md.with_suffix(".json").read_text())
    labels = [row["label"] for row in raw["ladder"]]
    assert labels == ["fp32", "fp16", "+channels_last", "+compile", "+xformers attention"]
    assert raw["ladder"][0]["measurement"]["status"] == "ok"
    assert "skipped on cpu" in raw["ladder"][3]["note"]
    ok, none_fit = raw["searches"]
    assert len(ok["records"]) == 2 and "Best:" in ok["summary"]
    # The hand choice is measured first, inside the search's share, by the worker the search reuses.
    hand = ok["hand_choice"]["measurement"]
    assert hand["status"] == "ok" and ok["profile_over_hand"] > 0
    assert hand["device_info"]["worker_pid"] == ok["records"][0]["measurement"]["device_info"]["worker_pid"]
    assert ok["budget_s"] == pytest.approx(ok["share_s"] - ok["hand_wall_s"])
    # Under 1KB the planner knows nothing fits: nothing new is measured (the 2GB search's trials are
    # reused, all over this ceiling), every other candidate is pruned with its prediction.
    assert len(none_fit["records"]) == 2 and all(r["outcome"] == "over_ceiling" for r in none_fit["records"])
    assert none_fit["pruned"]
    assert all(p["prediction"]["lower_bound_bytes"] > 1024 for p in none_fit["pruned"])
    assert "No feasible trial" in none_fit["summary"]
    text = md.read_text()
    assert "cpu_live_tensor_peak" in text and "## Search under 2GB" in text
    profile = yaml.safe_load(next(tmp_path.glob("*-smoke-2gb.yaml")).read_text())
    assert profile["fingerprint"]["device"] == "cpu"
    assert not list(tmp_path.glob("*-smoke-1kb.yaml"))
