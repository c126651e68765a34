"""Knob registry; importing this package registers the built-in knobs."""
from autotune.knobs import builtin as _builtin  # noqa: F401  (registers the knobs)
from autotune.knobs import attention_backend as _attention_backend  # noqa: F401  (after builtin: its conflicts name them)
from autotune.knobs.context import ModuleFacts
from autotune.knobs.registry import (
    ApplyContext,
    Conflict,
    Context,
    Knob,
    Stage,
    Value,
    all_knobs,
    conflicts,
    get,
    iter_conflicts,
    register,
    register_conflict,
)

__all__ = [
    "ApplyContext", "Conflict", "Context", "Knob", "ModuleFacts", "Stage", "Value", "all_knobs", "conflicts",
    "get", "iter_conflicts", "register", "register_conflict",
]
