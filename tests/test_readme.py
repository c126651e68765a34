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


QUICKSTART_SEARCH = "autotune search --max-vram 2GB --trials 8 --out profiles/example-cpu.yaml"


@pytest.mark.slow  # a real 8-trial search on the built-in default: ~1.5 min on 2 idle CPU cores, >20 min at load 14
def test_readme_search_transcript_has_the_structure_a_run_prints(tmp_path):
    """The README's "What a search looks like" block, read now (someone may have just rerun it),
    against the same command run in a fresh folder on CPU: the same header lines, trial table
    columns and summary labels, numbers, paths and settings masked (tests/helpers/transcript.py)."""
    import os
    import shlex
    import subprocess

    from helpers import transcript

    documented = transcript.parse(transcript.readme_block(README.read_text(), QUICKSTART_SEARCH))
    (tmp_path / "profiles").mkdir()  # as in a checkout, where the quickstart runs
    argv = shlex.split(QUICKSTART_SEARCH)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore",  # the CPU transcript
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = transcript.without_log_records(proc.stderr + proc.stdout)  # as the README shows them
    assert transcript.differences(documented, transcript.parse(printed)) == [], printed
    assert (tmp_path / "profiles" / "example-cpu.yaml").exists()
