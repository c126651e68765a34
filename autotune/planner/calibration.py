"""Every fitted constant of the planner, with where it was measured. Nothing else in the planner
is fitted: weights and activations come from traces of the real code.

A fake-tensor trace on CPU counts tensors, like `torch.cuda.max_memory_allocated`. What it cannot
see on a GPU is added here, in three layers:
  allocated = traced + cuDNN/cuBLAS workspaces   (VAE_DECODE_WORKSPACE_FACTOR, or a knob's own)
  reserved  = allocated + allocator caching       (ALLOCATOR_CACHED_FRACTION)
  process   = reserved + CUDA context & kernels   (CUDA_RUNTIME_BYTES)
On CPU the measured metric is itself a tensor count, so none of these apply.
"""
from __future__ import annotations

MiB = 2**20

#: Fitted on NVIDIA H200, torch 2.11 + CUDA 13.0, builtin:sd15 512x512 (benchmarks/results/
#: 2026-11-26-nvidia-h200.json): measured max_memory_allocated minus the traced peak, during the
#: VAE decode, was 0.70x (fp32) and 0.75x (fp16) of the decode's traced activation peak with NCHW
#: weights (cuDNN workspaces and NCHW<->NHWC copies of the 512x512 feature maps). A knob that
#: changes it owns its own factor (channels_last: `VAE_DECODE_WORKSPACE_FACTOR` in its module).
VAE_DECODE_WORKSPACE_FACTOR = 0.75

#: Same run: max_memory_reserved - max_memory_allocated, as a fraction of the peak phase's
#: transient bytes (activations + workspace, which the caching allocator keeps after they are
#: freed), was 0.45-0.84 in 8 of 9 rows (median 0.6) and 0.05 for sequential offload.
ALLOCATOR_CACHED_FRACTION = 0.6

#: Same run: the NVML process peak exceeded max_memory_reserved by 0.66-0.68 GiB in all 14 rows
#: (the 518 MiB context measured at start-up, plus kernels and library handles loaded lazily).
CUDA_RUNTIME_BYTES = 680 * MiB

#: Not fitted: the smallest CUDA context a process can have (300-600 MB are usual; 518 MiB was
#: measured on the H200). Used only in the lower bound that pruning relies on.
CUDA_CONTEXT_FLOOR_BYTES = 256 * MiB

#: A search does not measure a candidate whose lower bound (traced weights + activations +
#: CUDA_CONTEXT_FLOOR_BYTES, no fitted term) exceeds the ceiling by more than this fraction. The
#: fitted terms only rank and seed candidates; they never veto one.
DEFAULT_PRUNE_MARGIN = 0.05
