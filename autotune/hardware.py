"""What machine this is: GPUs via NVML (torch as fallback), and the fingerprint a profile keeps."""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar

from autotune._version import __version__
from autotune.errors import InvalidTargetError
from autotune.plain_record import PlainRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int | None
    compute_capability: str | None
    driver: str | None
    source: str  # "nvml" or "torch"


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def probe_gpus_nvml() -> list[GpuInfo]:
    """GPUs as NVML sees them; [] when NVML is missing (no driver), never raises for that."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.debug("NVML unavailable: %s", exc)
        return []
    try:
        driver = _decode(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability: str | None = f"{major}.{minor}"
            except pynvml.NVMLError:
                capability = None
            gpus.append(GpuInfo(index, _decode(pynvml.nvmlDeviceGetName(handle)), int(mem.total),
                                int(mem.free), capability, driver, "nvml"))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def nvml_handle_for_cuda0(pynvml: Any) -> Any:
    """NVML's handle of the GPU torch calls cuda:0. NVML numbers every GPU on the machine, CUDA
    only the visible ones: with CUDA_VISIBLE_DEVICES=2, cuda:0 is NVML's GPU 2."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if first.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(first)
    return pynvml.nvmlDeviceGetHandleByIndex(int(first) if first.isdigit() else 0)


def visible_gpu_index() -> int:
    """Position of cuda:0 in the NVML list (see `nvml_handle_for_cuda0`), for plain index lists."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


def probe_gpus_torch() -> list[GpuInfo]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        free, _total = torch.cuda.mem_get_info(index)
        gpus.append(GpuInfo(index, props.name, int(props.total_memory), int(free),
                            f"{props.major}.{props.minor}", None, "torch"))
    return gpus


def probe_gpus() -> list[GpuInfo]:
    return probe_gpus_nvml() or probe_gpus_torch()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


#: /proc/cpuinfo flags of native half-precision arithmetic (x86: AVX512-BF16, AVX512-FP16, AMX;
#: Arm: FP16 and BF16 SIMD). Without one, PyTorch computes fp16/bf16 on the CPU by widening to
#: fp32 and back: on this project's AMD EPYC (AVX2 only) a builtin:tiny-sd run took 6 s in
#: fp16/bf16 against 0.4 s in fp32 (README, "What a search looks like", 2026-12-02).
NATIVE_HALF_CPU_FLAGS = frozenset({"avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "asimdhp", "bf16"})


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags (`flags` on x86, `Features` on Arm), None where unreadable."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return None


def cpu_lacks_native_half(flags: frozenset[str] | None = None) -> bool:
    """True only when the CPU's flags are known and none computes fp16/bf16 natively (an
    unknown CPU is not assumed slow)."""
    flags = cpu_flags() if flags is None else flags
    return flags is not None and not flags & NATIVE_HALF_CPU_FLAGS


def total_ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def require_gpu() -> GpuInfo:
    """The GPU torch calls cuda:0, or a one-line error naming the fix."""
    gpus = probe_gpus()
    if not gpus:
        raise InvalidTargetError("--device cuda, but no CUDA GPU is visible here; use --device cpu "
                                 "(or --device auto) or run on a machine with a GPU")
    if not torch_has_cuda():
        import torch

        raise InvalidTargetError(f"a GPU is visible but this torch ({torch.__version__}) cannot use it; "
                                 "install a CUDA build of torch, or use --device cpu")
    return _cuda0(gpus)


def _cuda0(gpus: list[GpuInfo]) -> GpuInfo:
    """The entry of `gpus` (not empty) that torch calls cuda:0 (see `nvml_handle_for_cuda0`)."""
    index = visible_gpu_index()
    return gpus[index] if gpus[0].source == "nvml" and index < len(gpus) else gpus[0]


def device_name(device: str) -> str | None:
    """This machine's name for `device` ("cuda" or "cpu"), as fingerprints and measurements
    record it: the GPU torch calls cuda:0, or the CPU's model name. None when no GPU is visible."""
    if device == "cuda":
        gpus = probe_gpus()
        return _cuda0(gpus).name if gpus else None
    return cpu_name()


def device_memory(device: str) -> int | None:
    """The memory `device` holds (bytes): cuda:0's, or the host's RAM. None when unknown."""
    if device == "cuda":
        gpus = probe_gpus()
        return _cuda0(gpus).total_bytes if gpus else None
    return total_ram_bytes()


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def default_device() -> str:
    """cuda when torch can use a GPU (a visible GPU with a CPU-only torch is cpu)."""
    return "cuda" if torch_has_cuda() else "cpu"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("torch", "diffusers", "transformers", "accelerate", "optuna", "xformers"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    out["autotune"] = __version__
    return out


@dataclasses.dataclass(frozen=True)
class Fingerprint(PlainRecord):
    """Where a profile was measured: the device and its memory, the library versions, the model's
    identity, and how the CUDA backend set up the ceiling (the measurement's `DeviceInfo`, native
    or emulated). A profile's numbers only hold on a matching fingerprint. Read and written by
    the profile's section codec (plain_record.py): other facts ride along in `extra`."""

    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "device": (str,), "device_name": (str,), "total_memory_bytes": (int,), "compute_capability": (str,),
        "driver": (str,), "versions": (dict,), "model_identity": (str,), "cuda_context_bytes": (int,),
        "ceiling_mode": (str,), "memory_fraction": (float,), "pytorch_cuda_alloc_conf": (str,),
        "ceiling_note": (str,)}

    device: str | None = None
    device_name: str | None = None
    total_memory_bytes: int | None = None
    compute_capability: str | None = None
    driver: str | None = None
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The model's identity (models/identity.py), so a relative model folder still matches later.
    model_identity: str | None = None
    cuda_context_bytes: int | None = None
    #: How the ceiling was enforced: "native" (the card's own size) or "emulated" (PyTorch capped).
    ceiling_mode: str | None = None
    memory_fraction: float | None = None
    pytorch_cuda_alloc_conf: str | None = None
    ceiling_note: str | None = None

    @property
    def emulated(self) -> bool:
        return self.ceiling_mode == "emulated"


def fingerprint(device: str) -> Fingerprint:
    """This machine, as a profile records it (the setup of the ceiling is added by the search)."""
    info: dict[str, object] = {"device": device}
    if device == "cuda":
        gpu = require_gpu()
        info.update(device_name=gpu.name, total_memory_bytes=gpu.total_bytes,
                    compute_capability=gpu.compute_capability, driver=gpu.driver)
    else:
        info.update(device_name=cpu_name(), total_memory_bytes=total_ram_bytes(),
                    compute_capability=None, driver=None)
    info["versions"] = versions()
    return Fingerprint.from_dict(info)
