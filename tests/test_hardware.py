"""hardware: the one place device facts are read (here, with the GPU probes faked)."""
from __future__ import annotations

import pytest

from autotune import hardware

GPUS = [hardware.GpuInfo(i, f"GPU {i}", (i + 1) * 2**30, None, "9.0", "x", "nvml") for i in range(3)]


def test_the_device_name_is_cuda0s_under_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(hardware, "probe_gpus", lambda: GPUS)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert hardware.device_name("cuda") == "GPU 2" and hardware.device_memory("cuda") == 3 * 2**30


def test_no_gpu_has_no_name_and_the_cpu_its_model(monkeypatch):
    monkeypatch.setattr(hardware, "probe_gpus", lambda: [])
    assert hardware.device_name("cuda") is None and hardware.device_memory("cuda") is None
    assert hardware.device_name("cpu") == hardware.cpu_name()


@pytest.mark.parametrize("device", ["cpu"])
def test_the_fingerprint_names_the_device_as_device_name_does(device):
    assert hardware.fingerprint(device).device_name == hardware.device_name(device)


def test_the_version_comes_from_its_own_module():
    import autotune
    from autotune._version import __version__

    assert autotune.__version__ == __version__ == hardware.versions()["autotune"]


def test_half_precision_is_native_only_with_a_flag_that_computes_it():
    assert hardware.cpu_lacks_native_half(frozenset({"avx2", "fma", "f16c"}))  # f16c only converts
    assert not hardware.cpu_lacks_native_half(frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert not hardware.cpu_lacks_native_half(frozenset({"fp", "asimd", "asimdhp"}))  # Arm FP16


def test_an_unreadable_cpu_is_not_assumed_slow(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: None)
    assert not hardware.cpu_lacks_native_half()
