"""notebooks/explore.ipynb executes from top to bottom (a real small search: about a minute on
2 CPU cores). Deselect with `-m "not notebook"` (or `-k "not notebook"`)."""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"

pytestmark = [pytest.mark.notebook, pytest.mark.slow]  # 80 s: the slow tier (CI runs both tiers)


def outputs(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_explore_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=170, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    text = "\n".join(outputs(c) for c in code)
    assert "trials measured in" in text and "trial 0:" in text
    assert "profile  " in text and "entry    best" in text  # str(handle) of the applied profile
    assert "fastest under max_vram" in text  # the entry for a lower ceiling
    assert "NoMatchingProfileError: no entry of this profile fits" in text
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))
    assert images >= 5  # trade-off, prediction, knobs, quality, generated images
    assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not list(tmp_path.iterdir())  # it writes nothing where it runs (a temp run dir)
