"""The README's Python snippet runs as written against a profile at the path it names."""
from __future__ import annotations

import re
from pathlib import Path

from test_apply import make_profile

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
