"""Plain-text tables and the shared wording of numbers."""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from autotune.units import format_size


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def size(value: float | None) -> str:
    return format_size(value)


def settings_diff(settings: dict[str, Any], defaults: dict[str, Any]) -> str:
    """Only what differs from the defaults: 'dtype=fp16 vae_slicing=True', or 'defaults'."""
    changed = [f"{k}={v}" for k, v in settings.items() if defaults.get(k) != v]
    return " ".join(changed) or "defaults"


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
