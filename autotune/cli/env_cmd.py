"""`autotune env`: the block to paste into a bug report (as `diffusers-cli env`, `accelerate env`)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
from typing import TYPE_CHECKING, Any

from autotune.cli.format import print_json, size

if TYPE_CHECKING:
    from autotune.hardware import GpuInfo

PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "optuna", "xformers", "nvidia-ml-py",
            "huggingface_hub", "safetensors", "numpy", "pyyaml")
ENV_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE",
            "HF_HOME", "AUTOTUNE_PROFILE_DIR", "TORCHINDUCTOR_CACHE_DIR", "OMP_NUM_THREADS")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("env", help="print versions, GPUs and settings to paste into a bug report",
                       description="Print autotune's environment: Python, platform, library versions, "
                                   "torch's CUDA build, the GPUs found and the environment variables "
                                   "that change what autotune measures.")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=run)


@dataclasses.dataclass(frozen=True)
class TorchBuild:
    """What torch was built with and whether it sees a GPU (None: torch is not installed)."""

    cuda_build: str | None
    cuda_available: bool
    cudnn: int | None


@dataclasses.dataclass(frozen=True)
class EnvReport:
    """Everything `env` reports; `to_dict()` is what --json prints."""

    autotune: str
    python: str
    platform: str
    #: Version of each of PACKAGES, None where it is not installed.
    packages: dict[str, str | None]
    torch: TorchBuild
    gpus: list[GpuInfo]
    cpu: str
    cpu_count: int | None
    ram_bytes: int | None
    #: Each of ENV_VARS, None where it is unset.
    env: dict[str, str | None]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def collect() -> EnvReport:
    """Everything `env` reports."""
    from importlib.metadata import PackageNotFoundError, version

    from autotune import __version__, hardware

    packages: dict[str, str | None] = {}
    for dist in PACKAGES:
        try:
            packages[dist] = version(dist)
        except PackageNotFoundError:
            packages[dist] = None
    return EnvReport(autotune=__version__, python=platform.python_version(), platform=platform.platform(),
                     packages=packages, torch=_torch_build(), gpus=list(hardware.probe_gpus()),
                     cpu=hardware.cpu_name(), cpu_count=os.cpu_count(), ram_bytes=hardware.total_ram_bytes(),
                     env={name: os.environ.get(name) for name in ENV_VARS})


def _torch_build() -> TorchBuild:
    try:
        import torch
    except ImportError:
        return TorchBuild(cuda_build=None, cuda_available=False, cudnn=None)
    available = torch.cuda.is_available()
    return TorchBuild(cuda_build=torch.version.cuda, cuda_available=available,
                      cudnn=torch.backends.cudnn.version() if available else None)


def render(info: EnvReport) -> str:
    build, packages = info.torch, info.packages
    torch_version = packages.get("torch") or "not installed"
    cuda = f"CUDA {build.cuda_build}" if build.cuda_build else "CPU-only build"
    lines = [
        f"- autotune: {info.autotune}",
        f"- Python: {info.python}",
        f"- Platform: {info.platform}",
        f"- torch: {torch_version} ({cuda}; GPU usable: {'yes' if build.cuda_available else 'no'}"
        + (f", cuDNN {build.cudnn}" if build.cudnn else "") + ")",
    ]
    lines += [f"- {name}: {ver or 'not installed'}" for name, ver in packages.items() if name != "torch"]
    lines.append(f"- CPU: {info.cpu} ({info.cpu_count} cores), {size(info.ram_bytes)} RAM")
    if not info.gpus:
        lines.append("- GPUs: none found")
    for gpu in info.gpus:
        lines.append(f"- GPU {gpu.index}: {gpu.name}, {size(gpu.total_bytes)}, capability "
                     f"{gpu.compute_capability or '?'}, driver {gpu.driver or '?'} (via {gpu.source})")
    lines += [f"- {name}: {'(unset)' if value is None else value}" for name, value in info.env.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print_json(info.to_dict())
        return 0
    print("Copy-and-paste the text below into your GitHub issue.\n")
    print(render(info))
    return 0
