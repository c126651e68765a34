"""The process-wide float flags that change what a float32 run computes, read and pinned.

On Ampere and later, cuDNN convolutions run in TF32 by default (`torch.backends.cudnn.allow_tf32`
is True), so an "fp32" reference is not fp32 unless TF32 is turned off. The exact reference runs
under `exact_math()`; every trial records the flags it ran under (`MathFlags`), so two
measurements made under different flags are never compared as if they were alike.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator


@dataclasses.dataclass(frozen=True)
class MathFlags:
    """What torch was told about reduced-precision float math when a run was made."""

    cuda_matmul_allow_tf32: bool
    cudnn_allow_tf32: bool
    float32_matmul_precision: str
    fp16_reduced_precision_reduction: bool
    bf16_reduced_precision_reduction: bool
    cudnn_benchmark: bool
    cudnn_deterministic: bool

    def to_dict(self) -> dict[str, bool | str]:
        return dataclasses.asdict(self)

    @property
    def exact_fp32(self) -> bool:
        """No TF32 anywhere: a float32 run computes in float32."""
        return not (self.cuda_matmul_allow_tf32 or self.cudnn_allow_tf32) and self.float32_matmul_precision == "highest"


def current() -> MathFlags:
    """The flags in force in this process now."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    return MathFlags(
        cuda_matmul_allow_tf32=bool(matmul.allow_tf32),
        cudnn_allow_tf32=bool(cudnn.allow_tf32),
        float32_matmul_precision=str(torch.get_float32_matmul_precision()),
        fp16_reduced_precision_reduction=bool(matmul.allow_fp16_reduced_precision_reduction),
        bf16_reduced_precision_reduction=bool(matmul.allow_bf16_reduced_precision_reduction),
        cudnn_benchmark=bool(cudnn.benchmark),
        cudnn_deterministic=bool(cudnn.deterministic),
    )


@contextlib.contextmanager
def exact_math(enabled: bool = True) -> Iterator[MathFlags]:
    """TF32 off for matmuls and convolutions while inside; the flags found are put back after.

    Yields the flags in force inside (what the run inside was made under)."""
    import torch

    if not enabled:
        yield current()
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = current()
    matmul.allow_tf32 = False
    cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield current()
    finally:
        matmul.allow_tf32 = before.cuda_matmul_allow_tf32
        cudnn.allow_tf32 = before.cudnn_allow_tf32
        torch.set_float32_matmul_precision(before.float32_matmul_precision)
