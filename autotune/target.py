"""What the user wants tuned: model, output size, batch, steps, memory ceiling, device."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from autotune.errors import InvalidTargetError

#: Latent diffusion VAEs downsample by 8: pixel sizes must divide by it or the pipeline refuses them.
PIXEL_MULTIPLE = 8
SUPPORTED_DEVICES = ("cpu", "cuda")


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

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0 or value % PIXEL_MULTIPLE:
                raise InvalidTargetError(
                    f"--{name} must be a positive multiple of {PIXEL_MULTIPLE} (the VAE works on "
                    f"8x8 pixel blocks), got {value!r}; try {_nearest_multiples(value)}"
                )
        if not _is_int(self.batch) or self.batch < 1:
            raise InvalidTargetError(f"--batch must be 1 or more, got {self.batch!r}")
        if not _is_int(self.steps) or self.steps < 1:
            raise InvalidTargetError(f"--steps must be 1 or more, got {self.steps!r}")
        if not _is_int(self.max_vram) or self.max_vram <= 0:
            raise InvalidTargetError(f"--max-vram must be a positive size, got {self.max_vram!r}")
        if self.device not in SUPPORTED_DEVICES:
            raise InvalidTargetError(
                f"--device must be one of {', '.join(SUPPORTED_DEVICES)} (or 'auto'), got {self.device!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise InvalidTargetError(f"unknown target field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def key(self) -> str:
        """A short stable id for run directories and study names."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        slug = self.model.replace("/", "-").replace(":", "-")
        return f"{slug}-{self.width}x{self.height}-b{self.batch}-{hashlib.sha1(blob).hexdigest()[:8]}"


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
