"""The knob registry: every technique autotune can switch, described once.

A knob knows everything specific to it, so the rest of autotune asks the knob instead of naming
it: its choices, the stage it applies in and its order inside the stage, what it needs to run
(availability is asked with a `Context`, knobs/context.py), which choices change the numbers
beyond float reordering (lossy), the arguments it adds when loading weights, what the planner
must do to predict its memory (`PlanEffect`), and where it sits in the speed prior that orders a
search's first candidates (`SpeedPrior`). Each knob is one module of `autotune.knobs.builtin`.
Torch-free at import.
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from autotune.errors import UnknownKnobError
from autotune.knobs.context import Context

Value = Any  # str | bool | int: whatever YAML and Optuna categoricals carry


class Stage(enum.IntEnum):
    """Canonical apply order. Weight storage and layout first, placement next, then runtime
    switches, compile last (it must see the final modules)."""

    LOAD = 0
    PLACE = 1
    TUNE = 2
    COMPILE = 3


@dataclasses.dataclass(frozen=True)
class ApplyContext:
    """What `apply` needs beyond the value: where the pipeline runs."""

    device: str


ApplyFn = Callable[[Any, Value, ApplyContext], None]
ReasonFn = Callable[[Value, Context], "str | None"]


def _always_available(value: Value, ctx: Context) -> str | None:
    return None


def _no_load_kwargs(value: Value) -> dict[str, Any]:
    return {}


#: Component roles a planner effect can name (`context.role_of`): the module that runs every
#: step, the VAE, and the text encoders.
ROLES = frozenset({"denoiser", "vae", "text_encoder"})


@dataclasses.dataclass(frozen=True)
class PlanEffect:
    """How a knob's value changes the planner's prediction (planner/__init__.py asks this, never
    the knob's name). Every hook gets the fake (meta-sized) module of one component whose role is
    in `roles`, and the value; a knob without hooks changes no prediction (runtime switches)."""

    roles: frozenset[str] = frozenset()
    #: Changes the module's weights (fuses or adds parameters): called on a fresh fake module,
    #: built for this value alone, before its weights are counted and its activations traced.
    modify: Callable[[Any, Value], None] | None = None
    #: The dtype the module's weights and activations are in where the knob sets it apart from
    #: the one it loads in (a VAE upcast to fp32), or None: the module is built in it.
    own_dtype: Callable[[Value], Any] | None = None
    #: Changes how the module runs but not its weights (slicing, tiling): called on the shared
    #: fake module before each trace, for the default value too (it must undo the others).
    configure: Callable[[Any, Value], None] | None = None
    #: Parameters kept in a narrower dtype and upcast one layer at a time while it runs:
    #: {qualified parameter name: bytes per element} (layerwise fp8 casting, weight-only quant;
    #: fractional where scales are kept per row).
    storage: Callable[[Any, Value], Mapping[str, float]] | None = None
    #: Where weights are while a component runs: bytes resident on the device, from every
    #: component's `planner.stats.WeightStats` (the placement knob: offload). None: all of them.
    resident: Callable[[Value, str, Mapping[str, Any]], int] | None = None
    #: Host RAM the weights take at their peak, from every component's WeightStats: the placement
    #: knob again. None: all weights, as loaded (they pass through RAM on the way to the device).
    host: Callable[[Value, Mapping[str, Any]], int] | None = None
    #: GPU workspace of the VAE decode as a fraction of its traced activations (calibration.py);
    #: None leaves the calibrated default.
    vae_workspace_factor: Callable[[Value], float | None] | None = None

    def touches(self, role: str) -> bool:
        return role in self.roles


#: A `SpeedPrior.rank` for a value measured to be many times slower on this device (half
#: precision on a CPU without native support): every candidate with it is proposed after the
#: likely-fast ones, and none is among the first that cover the `spread` knobs' values.
SLOW = 100


@dataclasses.dataclass(frozen=True)
class SpeedPrior:
    """What a knob's values usually cost in speed, before anything is measured: the search
    measures the likely-fastest predicted-feasible candidates first (planner/seeding.py).

    Candidates are compared knob by knob in ascending `order` (lower decides first), each by
    `rank(value, device)` (lower is usually faster). The default rank says what most memory
    savers do: the default value is fastest, any other costs some time. `spread` knobs decide so
    much (where weights live, their precision) that the first candidates cover each of their
    value combinations once."""

    order: int = 100
    rank: Callable[[Value, str], int] | None = None
    spread: bool = False


@dataclasses.dataclass(frozen=True)
class Knob:
    name: str
    choices: tuple[Value, ...]
    default: Value
    stage: Stage
    help: str
    apply: ApplyFn
    lossy: frozenset[Value] = frozenset()
    #: Lossy choices one call on the reference's inputs cannot show: an error that builds up
    #: across steps (a cache reusing one step's output in the next), or one in the inputs the
    #: replay replaces with the reference's (a quantized text encoder's prompt embeddings). The
    #: quality floor judges them on the final image, not per call (quality.below_floor).
    judged_end_to_end: frozenset[Value] = frozenset()
    requires_components: tuple[str, ...] = ()
    #: Why a choice cannot run in this context (device, package, pipeline), or None.
    unavailable_reason: ReasonFn = _always_available
    #: Why a choice is left out of the search by default though it could run (e.g. too slow on
    #: CPU), or None. The user can include it back.
    excluded_by_default: ReasonFn = _always_available
    #: Choices that leave state in the process beyond the pipeline (torch.compile's caches and
    #: recompile counters): the worker that measured one is replaced before the next trial.
    process_state: frozenset[Value] = frozenset()
    #: Choices that torch.compile part of the pipeline: a profile with one gets compile
    #: artifacts saved beside it (compile_cache.py, `autotune warmup`).
    compiles: frozenset[Value] = frozenset()
    #: Keyword arguments the value adds when the pipeline's weights are loaded
    #: (`pipelines.build_pipeline`, e.g. `torch_dtype`; the planner builds its fake modules in
    #: that dtype). A worker keeps one pristine copy per distinct set (`load_key`).
    load_kwargs: Callable[[Value], dict[str, Any]] = _no_load_kwargs
    #: Knobs of the same stage this one is applied after / before (it reads what they set, or
    #: they must see what it sets); otherwise knobs of a stage apply in registration order.
    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    plan: PlanEffect = PlanEffect()
    speed: SpeedPrior = SpeedPrior()

    def reason_unavailable(self, value: Value, ctx: Context) -> str | None:
        if value == self.default:
            return None
        missing = [c for c in self.requires_components if c not in ctx.components]
        if self.requires_components and len(missing) == len(self.requires_components):
            return f"the pipeline has no {' or '.join(self.requires_components)} component"
        return self.unavailable_reason(value, ctx)

    def loads_differently(self, value: Value) -> bool:
        """Whether `value` changes how the weights are loaded (then its narrower storage, if any,
        is what loading itself produces: a quantizer that works while loading)."""
        return self.load_kwargs is not _no_load_kwargs and value != self.default

    def is_lossy(self, value: Value) -> bool:
        return value in self.lossy

    def is_judged_end_to_end(self, value: Value) -> bool:
        return value in self.judged_end_to_end

    def speed_rank(self, value: Value, device: str) -> int:
        if self.speed.rank is not None:
            return self.speed.rank(value, device)
        return 0 if value == self.default else 1


@dataclasses.dataclass(frozen=True)
class Conflict:
    """Two knob values that must not be combined, with the reason shown to the user."""

    knob_a: str
    values_a: frozenset[Value]
    knob_b: str
    values_b: frozenset[Value]
    reason: str

    def violated_by(self, assignment: dict[str, Value]) -> bool:
        return assignment.get(self.knob_a) in self.values_a and assignment.get(self.knob_b) in self.values_b


_KNOBS: dict[str, Knob] = {}
_CONFLICTS: list[Conflict] = []


def register(knob: Knob) -> Knob:
    if knob.name in _KNOBS:
        raise ValueError(f"knob {knob.name!r} is registered twice")
    if knob.default not in knob.choices:
        raise ValueError(f"knob {knob.name!r}: default {knob.default!r} is not one of its choices")
    _KNOBS[knob.name] = knob
    return knob


def register_conflict(conflict: Conflict) -> None:
    """Knobs may name knobs registered after them: `check_conflicts` validates once all are in."""
    _CONFLICTS.append(conflict)


def check_conflicts() -> None:
    """Every conflict names registered knobs and values they have (a typo is a bug, found at import)."""
    for conflict in _CONFLICTS:
        for name, values in ((conflict.knob_a, conflict.values_a), (conflict.knob_b, conflict.values_b)):
            unknown = values - set(get(name).choices)
            if unknown:
                raise ValueError(f"conflict {conflict.reason!r} names values {sorted(map(str, unknown))} "
                                 f"that knob {name!r} does not have")


def get(name: str) -> Knob:
    try:
        return _KNOBS[name]
    except KeyError:
        raise UnknownKnobError(
            f"unknown knob {name!r}; known knobs: {', '.join(_KNOBS)}"
        ) from None


#: The last order computed, with the identities of the knobs it was computed from: the planner
#: asks for it per module per candidate (a Wan space: 2 x 10^5 calls, a quarter of its planning
#: time under the profiler).
_ORDER: tuple[tuple[int, ...], tuple[Knob, ...]] = ((), ())


def all_knobs() -> list[Knob]:
    """Knobs in canonical apply order: by stage; inside a stage, each after the knobs it names in
    `after` and before those in `before`, else in registration order."""
    global _ORDER
    registered = tuple(map(id, _KNOBS.values()))  # the cache holds the knobs: no id is reused
    if _ORDER[0] != registered:
        ordered: list[Knob] = []
        for stage in sorted({k.stage for k in _KNOBS.values()}):
            ordered += _stage_order([k for k in _KNOBS.values() if k.stage == stage])
        _ORDER = (registered, tuple(ordered))
    return list(_ORDER[1])


def _stage_order(stage: list[Knob]) -> list[Knob]:
    names = {k.name for k in stage}
    needs = {k.name: {a for a in k.after if a in names} for k in stage}
    for k in stage:
        for b in k.before:
            if b in names:
                needs[b].add(k.name)
    done: list[Knob] = []
    while len(done) < len(stage):
        ready = next((k for k in stage if k not in done and needs[k.name] <= {d.name for d in done}), None)
        if ready is None:
            cycle = sorted(n for n in names if n not in {d.name for d in done})
            raise ValueError(f"knobs {', '.join(cycle)} order each other in a cycle (after/before)")
        done.append(ready)
    return done


def load_kwargs(settings: Mapping[str, Value]) -> dict[str, Any]:
    """The keyword arguments of `pipelines.build_pipeline` for these settings (missing knobs: defaults)."""
    kwargs: dict[str, Any] = {}
    for knob in all_knobs():
        kwargs.update(knob.load_kwargs(settings.get(knob.name, knob.default)))
    return kwargs


def load_dtype(settings: Mapping[str, Value]) -> Any:
    """The torch dtype these settings load the weights in (float32 unless a knob says otherwise)."""
    import torch

    return load_kwargs(settings).get("torch_dtype", torch.float32)


def load_key(settings: Mapping[str, Value]) -> tuple[tuple[str, Value], ...]:
    """The knob values that decide how weights are loaded: settings with equal keys share weights.
    A knob whose value adds no load argument (bitsandbytes off) is left out."""
    key = []
    for knob in all_knobs():
        value = settings.get(knob.name, knob.default)
        if knob.load_kwargs is not _no_load_kwargs and (value != knob.default or knob.load_kwargs(value)):
            key.append((knob.name, value))
    return tuple(key)


def compiles(settings: Mapping[str, Value]) -> bool:
    """Whether these settings torch.compile anything (then compile artifacts are worth saving)."""
    return any(settings.get(k.name, k.default) in k.compiles for k in all_knobs())


def conflicts() -> list[Conflict]:
    return list(_CONFLICTS)


def iter_conflicts(assignment: dict[str, Value]) -> Iterator[Conflict]:
    return (c for c in _CONFLICTS if c.violated_by(assignment))
