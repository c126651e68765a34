"""Shared fixtures. Tests run offline: HF_HUB_OFFLINE makes unknown hub ids fail at once."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

TINY = "builtin:tiny-sd"


@pytest.fixture
def tiny_pipe():
    """A fresh tiny SD pipeline (seeded random weights, ~0.1 s to build after the first import)."""
    from autotune.models.pipelines import build_pipeline

    return build_pipeline(TINY)


