"""The one default rule every command follows: which device, and which model for it.

`--device auto` (the default everywhere) means cuda when torch can use a GPU, else cpu; the
default model is the real SD 1.5 architecture on cuda and the tiny one trained on shapes on cpu,
where SD 1.5 would take minutes per trial (trained, so that a newcomer's first image is smooth
shapes, not the coloured noise of random weights). `plan --device cuda` still works without a
GPU: choosing the device is not the same as requiring it (`search` checks for the GPU itself).
"""
from __future__ import annotations

import argparse

DEVICE_CHOICES = ("auto", "cuda", "cpu")
MODEL_FOR_DEVICE = {"cuda": "builtin:sd15", "cpu": "builtin:tiny-sd-shapes"}
MODEL_DEFAULT_HELP = "builtin:sd15 on cuda, builtin:tiny-sd-shapes on cpu"


def resolve_device(arg: str | None) -> str:
    """'auto' or None -> 'cuda' when torch can use a GPU, else 'cpu'; 'cuda'/'cpu' as given."""
    from autotune.errors import InvalidTargetError

    if arg is None or arg == "auto":
        from autotune import hardware

        return hardware.default_device()
    if arg not in DEVICE_CHOICES:
        raise InvalidTargetError(f"--device must be one of cuda, cpu or auto, got {arg!r}")
    return arg


def default_model(device: str) -> str:
    """The model a command uses when --model is left out, for a resolved device."""
    return MODEL_FOR_DEVICE.get(device, MODEL_FOR_DEVICE["cpu"])


def add_device_argument(p: argparse.ArgumentParser, *, note: str = "") -> None:
    """`--device` with the shared default and help text (`note` adds a command's own remark)."""
    p.add_argument("--device", default="auto",
                   help="cuda, cpu or auto (default: auto = cuda when torch can use a GPU, else cpu)"
                        + (f"; {note}" if note else ""))
