"""scripts/train_tiny_sd_shapes.py is deterministic: two short runs write the same bytes, and
what it writes is what builtins load (files named in weights.json, with their checksums)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_tiny_sd_shapes.py"


def _train(out: Path) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--vae-steps", "3", "--unet-steps", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "weights.json").read_text())


@pytest.mark.slow  # two short trainings, ~30 s each on a loaded CPU
def test_two_runs_write_the_same_bytes(tmp_path):
    first, second = _train(tmp_path / "a"), _train(tmp_path / "b")
    assert first == second
    for component, digest in first["sha256"].items():
        assert hashlib.sha256((tmp_path / "a" / f"{component}.safetensors").read_bytes()).hexdigest() == digest
    assert set(first["sha256"]) == {"unet", "vae"} and first["scaling_factor"] > 0
