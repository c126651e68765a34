"""Memory sizes as users type them.

"8GB" means 8 GiB (8 * 2**30 bytes): that is how GPU vendors label cards and how nvidia-smi and
PyTorch report them, so `--max-vram 8GB` means "a card sold as 8 GB". Decimal gigabytes can be
typed as plain bytes ("8000000000B"). Both "GB" and "GiB" spellings are accepted.
"""
from __future__ import annotations

import re

from autotune.errors import InvalidTargetError

_UNITS = {
    "b": 1,
    "k": 2**10, "kb": 2**10, "kib": 2**10,
    "m": 2**20, "mb": 2**20, "mib": 2**20,
    "g": 2**30, "gb": 2**30, "gib": 2**30,
    "t": 2**40, "tb": 2**40, "tib": 2**40,
}
#: No device holds more than this (1 PiB): a larger size is a typo, not a ceiling.
MAX_SIZE = 2**50
_SIZE = re.compile(r"^\s*(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[a-zA-Z]+)\s*$")


def parse_size(text: str, *, what: str = "--max-vram") -> int:
    """Parse '8GB', '7.5GiB', '512MB' into bytes; a bare number is refused (8 what?)."""
    match = _SIZE.match(str(text))
    unit = match and _UNITS.get(match.group("unit").lower())
    if not match or not unit:
        raise InvalidTargetError(
            f"{what} must be a size with a unit like '8GB', '7.5GiB' or '512MB', got {text!r}"
        )
    value = float(match.group("num")) * unit
    if value > MAX_SIZE:  # also the overflow of '9999...9TB' (float infinity)
        raise InvalidTargetError(
            f"{what} {text!r} is more than any device holds; give at most 1024TB, e.g. '8GB'"
        )
    size = int(value)
    if size <= 0:
        raise InvalidTargetError(f"{what} must be larger than zero, got {text!r}")
    return size


def format_size(num_bytes: float | None) -> str:
    """Bytes as the largest binary unit that keeps the number >= 1, e.g. '2.03 GiB'."""
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


def size_bytes(value: str | int, *, what: str = "max_vram") -> int:
    """A size given as text ('6GB', see `parse_size`) or as a positive number of bytes, as bytes:
    the one reading of a ceiling passed to the library (`apply_profile(max_vram=...)`)."""
    if isinstance(value, str):
        return parse_size(value, what=what)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidTargetError(f"{what} must be a size like '6GB' or a number of bytes > 0, got {value!r}")
    return value


def size_arg(num_bytes: int) -> str:
    """A size as `--max-vram` takes it back: '6GB', '3.35MB' (binary units, see above)."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if num_bytes >= size:
            return f"{num_bytes / size:.3g}{unit}"
    return f"{num_bytes}B"
