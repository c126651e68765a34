"""The README's Python snippet runs as written against a profile at the path it names."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from helpers.profiles import make_profile

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippet_reproduces_a_profile_and_writes_an_image(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    make_profile({"attention": "sliced", "vae_slicing": True}, height=128, width=128).save(
        tmp_path / "profiles" / "example-cpu.yaml")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert dict(namespace["handle"].applied)["attention"] == "sliced"
    assert (tmp_path / "example.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_readme_multi_worker_block_runs_as_written(tmp_path):
    """The README's two-process block against PostgreSQL (the server .ci/run starts; sqlite
    otherwise): one study, exactly 6 trials, none measured twice, and an exported profile."""
    import os
    import subprocess

    import optuna

    block = next(b for b in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S) if "--study demo" in b)
    db = os.environ.get("AUTOTUNE_TEST_POSTGRES_URL") or f"sqlite:///{tmp_path}/demo.db"
    env = {**os.environ, "DB": db, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-euc", block], cwd=tmp_path, env=env, check=True, timeout=900,
                   capture_output=True)
    study = optuna.load_study(study_name="demo", storage=db)
    measured = [t for t in study.get_trials() if "measurement" in t.user_attrs and "duplicate_of" not in t.user_attrs]
    keys = [str(sorted(t.user_attrs["assignment"].items())) for t in measured]
    assert len(measured) == 6 and len(set(keys)) == 6
    assert (tmp_path / "demo-profile.yaml").exists()
    if db.startswith("postgresql"):
        optuna.delete_study(study_name="demo", storage=db)
