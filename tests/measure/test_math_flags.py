"""The float flags a run is made under: read, pinned to true fp32, put back."""
from __future__ import annotations

import pytest
import torch

from autotune.measure.backends import math_flags


@pytest.fixture
def tf32_matmuls():
    """TF32 matmuls on for the test (monkeypatch cannot restore torch's cuBLAS attributes)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def test_exact_math_turns_tf32_off_and_puts_the_flags_back(monkeypatch, tf32_matmuls):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # PyTorch's default
    before = math_flags.current()
    assert not before.exact_fp32
    with math_flags.exact_math() as inside:
        assert inside.exact_fp32 and math_flags.current() == inside
        assert torch.backends.cudnn.allow_tf32 is False and torch.get_float32_matmul_precision() == "highest"
    assert math_flags.current() == before and before.cuda_matmul_allow_tf32


def test_exact_math_puts_the_flags_back_after_an_error(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    try:
        with math_flags.exact_math():
            raise RuntimeError("a run that failed")
    except RuntimeError:
        pass
    assert torch.backends.cudnn.allow_tf32 is True


def test_disabled_changes_nothing(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    with math_flags.exact_math(enabled=False) as inside:
        assert inside.cudnn_allow_tf32 is True
    assert set(math_flags.current().to_dict()) >= {"cuda_matmul_allow_tf32", "cudnn_allow_tf32", "cudnn_benchmark"}
