"""What applying a profile did to each component's dtype and device, in words, and the warning
when a half-precision pipeline was turned into float32."""
from __future__ import annotations

import warnings
from typing import Any

from autotune import knobs
from autotune.knobs import Value

#: component -> (dtypes of its parameters, devices of its parameters), e.g. ("bfloat16", "cpu")
Placement = dict[str, tuple[str, str]]

_HALF = {"float16", "bfloat16"}


def placement(pipe: Any) -> Placement:
    """Each torch component's parameter dtypes and devices, joined ("float8_e4m3fn+float32")."""
    import torch

    found: Placement = {}
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            params = list(component.parameters())
            if params:
                dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params})
                devices = sorted({p.device.type for p in params})
                found[name] = ("+".join(dtypes), "+".join(devices))
    return found


def placement_changes(before: Placement, after: Placement) -> list[str]:
    """'unet: dtype float32 -> bfloat16', 'vae: device cpu -> cuda' for each component that changed."""
    changes = []
    for name in sorted(set(before) & set(after)):
        for i, what in enumerate(("dtype", "device")):  # not a knob: a tensor's properties
            if before[name][i] != after[name][i]:
                changes.append(f"{name}: {what} {before[name][i]} -> {after[name][i]}")
    return changes


def warn_upcast(before: Placement, after: Placement, settings: dict[str, Value]) -> None:
    """A user's half-precision pipeline turned into float32 by the profile costs twice the memory:
    say so (naming the settings that decide how weights are stored), and how to keep it."""
    import torch

    if knobs.load_dtype(settings) != torch.float32:
        return  # a component in float32 under a half-precision profile is a knob's choice (vae_dtype)
    upcast = sorted(name for name in set(before) & set(after)
                    if before[name][0] in _HALF and after[name][0] == "float32")
    if upcast:
        was = before[upcast[0]][0]
        storing = " ".join(f"{k}={v}" for k, v in knobs.load_key(settings))
        warnings.warn(
            f"the profile's {storing} converted {', '.join(upcast)} from {was} to float32 (about "
            f"twice the weight memory); to keep {was}, apply a profile searched and won in that dtype, "
            "or load the pipeline with load_pipeline(profile)",
            stacklevel=3,
        )
