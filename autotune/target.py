"""What the user wants tuned: model, output size, batch, steps, memory ceiling, device, and what
else the pipeline is called with (frames of a video, the user's own call arguments)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Union

from autotune.errors import InvalidTargetError

#: Latent diffusion VAEs downsample by 8: pixel sizes must divide by it or the pipeline refuses them.
PIXEL_MULTIPLE = 8
#: Upper bounds: past these a search is a typo that would trace or allocate for hours.
MAX_SIDE = 16384
MAX_BATCH = 256
MAX_STEPS = 1000
MAX_FRAMES = 1024
SUPPORTED_DEVICES = ("cpu", "cuda")
#: The ceiling of a target made without `--max-vram` (`autotune plan` only): every size fits under it.
NO_CEILING = 2**63 - 1
#: What a call argument can hold: what `--call-arg KEY=VALUE` parses to and YAML stores as is.
Scalar = Union[str, int, float, bool, None]
#: Fields added after profiles were first written: left out of `key()` while at their default, so
#: run directories and resumable studies of older targets keep their names.
_LATER_FIELDS = {"frames": None, "call_args": {}, "max_ram": None}


@dataclasses.dataclass(frozen=True)
class Target:
    """One tuning problem. Validated on construction so nothing downstream sees a bad value."""

    model: str
    height: int
    width: int
    batch: int
    steps: int
    max_vram: int  # bytes
    device: str = "cpu"
    pipeline_class: str | None = None
    prompt: str = "a photo of an astronaut riding a horse on mars"
    #: Frames per video for video pipelines (`num_frames`); None: the pipeline's own default.
    frames: int | None = None
    #: Extra `__call__` arguments, e.g. {"strength": 0.6, "use_resolution_binning": False}.
    call_args: dict[str, Scalar] = dataclasses.field(default_factory=dict)
    #: The host RAM ceiling in bytes (`--max-ram`), checked against the worker's resident-set peak
    #: (the warm worker's pristine weights included); None: no host ceiling.
    max_ram: int | None = None

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0 or value % PIXEL_MULTIPLE:
                raise InvalidTargetError(
                    f"--{name} must be a positive multiple of {PIXEL_MULTIPLE} (the VAE works on "
                    f"8x8 pixel blocks), got {value!r}; try {_nearest_multiples(value)}"
                )
            if value > MAX_SIDE:
                raise InvalidTargetError(f"--{name} must be at most {MAX_SIDE} pixels, got {value}")
        if not _is_int(self.batch) or self.batch < 1:
            raise InvalidTargetError(f"--batch must be 1 or more, got {self.batch!r}")
        if self.batch > MAX_BATCH:
            raise InvalidTargetError(f"--batch must be at most {MAX_BATCH}, got {self.batch}")
        if not _is_int(self.steps) or self.steps < 1:
            raise InvalidTargetError(f"--steps must be 1 or more, got {self.steps!r}")
        if self.steps > MAX_STEPS:
            raise InvalidTargetError(f"--steps must be at most {MAX_STEPS}, got {self.steps}")
        if not _is_int(self.max_vram) or self.max_vram <= 0:
            raise InvalidTargetError(f"--max-vram must be a positive size, got {self.max_vram!r}")
        if self.max_ram is not None and (not _is_int(self.max_ram) or self.max_ram <= 0):
            raise InvalidTargetError(f"--max-ram must be a positive size, got {self.max_ram!r}")
        if self.device not in SUPPORTED_DEVICES:
            raise InvalidTargetError(
                f"--device must be one of {', '.join(SUPPORTED_DEVICES)} (or 'auto'), got {self.device!r}"
            )
        if self.frames is not None and (not _is_int(self.frames) or self.frames < 1):
            raise InvalidTargetError(f"--frames must be 1 or more, got {self.frames!r}")
        if self.frames is not None and self.frames > MAX_FRAMES:
            raise InvalidTargetError(f"--frames must be at most {MAX_FRAMES}, got {self.frames}")
        # A private sorted copy: the caller's dict cannot change a frozen target afterwards.
        object.__setattr__(self, "call_args", _checked_call_args(self.call_args))

    @property
    def has_ceiling(self) -> bool:
        return self.max_vram != NO_CEILING

    def __hash__(self) -> int:  # the generated hash would fail on the call_args dict
        fields = tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "call_args")
        return hash((fields, tuple(self.call_args.items())))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise InvalidTargetError(f"unknown target field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def measurement_key(self) -> str:
        """The key of what a measurement depends on: everything but the ceilings, so measurements
        are shared between searches of the same model, size, batch and device."""
        return dataclasses.replace(self, max_vram=1, max_ram=None).key()

    def key(self) -> str:
        """A short stable id for run directories and study names."""
        data = {k: v for k, v in self.to_dict().items() if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}
        blob = json.dumps(data, sort_keys=True).encode()
        slug = self.model.replace("/", "-").replace(":", "-")
        return f"{slug}-{self.width}x{self.height}-b{self.batch}-{hashlib.sha1(blob).hexdigest()[:8]}"


def _checked_call_args(call_args: object) -> dict[str, Scalar]:
    if not isinstance(call_args, dict):
        raise InvalidTargetError(f"call_args must be a mapping of argument names to values, got {call_args!r}")
    for name, value in call_args.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidTargetError(f"--call-arg names a keyword argument of the pipeline call, got {name!r}")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise InvalidTargetError(
                f"--call-arg {name} must be a number, true/false, null or text, got {value!r}"
            )
    return dict(sorted(call_args.items()))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nearest_multiples(value: object) -> str:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return "512"
    below = number // PIXEL_MULTIPLE * PIXEL_MULTIPLE
    above = below + PIXEL_MULTIPLE
    return f"{below} or {above}" if below >= PIXEL_MULTIPLE else str(above)
