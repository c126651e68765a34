"""Knob registry; importing this package registers the built-in knobs, one module each
(autotune/knobs/builtin/), in name order."""
import importlib as _importlib
import pkgutil as _pkgutil

from autotune.knobs import builtin as _builtin
from autotune.knobs.context import ModuleFacts
from autotune.knobs.registry import (
    ApplyContext,
    Conflict,
    Context,
    Knob,
    SLOW,
    PlanEffect,
    SpeedPrior,
    Stage,
    Value,
    all_knobs,
    check_conflicts,
    compiles,
    conflicts,
    get,
    iter_conflicts,
    load_dtype,
    load_key,
    load_kwargs,
    register,
    register_conflict,
)

for _module in sorted(m.name for m in _pkgutil.iter_modules(_builtin.__path__)):
    _importlib.import_module(f"{_builtin.__name__}.{_module}")
check_conflicts()

__all__ = [
    "ApplyContext", "Conflict", "Context", "Knob", "ModuleFacts", "PlanEffect", "SLOW", "SpeedPrior", "Stage", "Value",
    "all_knobs", "compiles", "conflicts", "get", "iter_conflicts", "load_dtype", "load_key", "load_kwargs", "register",
    "register_conflict",
]
