"""Plain-text tables and the shared wording of numbers."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from autotune.units import format_size

if TYPE_CHECKING:
    from autotune.knobs import Value


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


def settings_diff(settings: Mapping[str, Value], defaults: Mapping[str, Value]) -> str:
    """Only what differs from the defaults: 'dtype=fp16 vae_slicing=True', or 'defaults'."""
    changed = [f"{k}={v}" for k, v in settings.items() if defaults.get(k) != v]
    return " ".join(changed) or "defaults"


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def check_output_path(path: Path, suffixes: tuple[str, ...], flag: str, *,
                      create_parents: bool = True) -> Path:
    """Refuse an output path that could not be written, before any long work is spent on it.

    With create_parents=False the folder must exist already: nothing is created silently."""
    import os

    from autotune.errors import InvalidTargetError

    if path.suffix.lower() not in suffixes:
        raise InvalidTargetError(f"{flag} must end in {' or '.join(suffixes)}, got {str(path)!r}")
    if path.is_dir():
        raise InvalidTargetError(f"{flag} {str(path)!r} is a folder; give a file name inside it")
    folder = path.parent
    if not create_parents and not folder.exists():
        raise InvalidTargetError(f"cannot write {flag} {str(path)!r}: folder {str(folder)!r} does not "
                                 f"exist; create it first (mkdir -p {folder}) or pick another path")
    parent = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK) or not _can_create_in(parent):
        raise InvalidTargetError(f"cannot write {flag} {str(path)!r}: {parent} is not a writable folder")
    return path


def _can_create_in(folder: Path) -> bool:
    """os.access says yes to root everywhere (even /proc): create and remove a temp file to know."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
