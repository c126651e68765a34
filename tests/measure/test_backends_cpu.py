"""The CPU memory metric: live tensor storages, each counted once, freed when the last ref dies."""
from __future__ import annotations

import torch

from autotune.measure.backends.cpu import ALIGNMENT, CpuBackend, LiveTensorTracker


def test_tracker_counts_peak_of_live_tensors():
    with LiveTensorTracker("cpu") as tracker:
        a = torch.ones(1024, dtype=torch.float32)          # 4 KiB
        b = torch.ones(2048, dtype=torch.float32)          # 8 KiB
        del a, b
        c = torch.ones(512, dtype=torch.float32)           # 2 KiB, after both were freed
    assert tracker.peak == 4096 + 8192
    assert tracker.current == 2048
    del c


def test_views_share_one_storage():
    with LiveTensorTracker("cpu") as tracker:
        x = torch.zeros(1000, dtype=torch.uint8)
        views = [x[:10], x.view(10, 100), x[5:]]
    assert tracker.peak == -(-1000 // ALIGNMENT) * ALIGNMENT
    del x, views


def test_seeded_weights_count_from_the_start():
    layer = torch.nn.Linear(256, 256)  # 256*256*4 + 256*4 bytes
    weights = 256 * 256 * 4 + 256 * 4
    tracker = LiveTensorTracker("cpu")
    tracker.seed([layer])
    assert tracker.current == weights
    with tracker, torch.no_grad():
        layer(torch.ones(1, 256))
    # The input and the output (1 KiB each) were live together on top of the weights; both were
    # freed once the call returned.
    assert tracker.peak >= weights + 2 * 1024
    assert tracker.current == weights


def test_backend_reads_peak_of_a_pipeline_run(tiny_pipe):
    backend = CpuBackend()
    with backend.track(tiny_pipe) as reading:
        tiny_pipe("x", height=64, width=64, num_inference_steps=1, output_type="np")
    weights = sum(p.numel() * p.element_size() for m in tiny_pipe.components.values()
                  if isinstance(m, torch.nn.Module) for p in m.parameters())
    assert reading.memory.resident_weights >= weights
    assert reading.peak_bytes > reading.memory.resident_weights
    assert backend.is_oom(MemoryError()) and not backend.is_oom(RuntimeError("x"))
