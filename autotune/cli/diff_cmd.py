"""`autotune diff A B`: what differs between two profiles (target, settings, measurements, machine)."""
from __future__ import annotations

import argparse
from typing import Any

from autotune.cli.format import print_json, seconds, size, table

SECTIONS = ("target", "settings", "measurements", "fingerprint", "search")
#: Always shown, with B's change relative to A: the numbers people compare profiles for.
HEADLINE = ("latency_median_s", "latency_p90_s", "peak_bytes")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("diff", help="compare two profiles: target, settings, measurements, fingerprint",
                       description="Compare two profiles: the target each was tuned for, the settings "
                                   "each chose, what they measured (B relative to A) and the machine "
                                   "and library versions that measured them. Only differences are "
                                   "listed, except latency and peak, which are always shown.")
    p.add_argument("a", metavar="A", help="first profile YAML")
    p.add_argument("b", metavar="B", help="second profile YAML")
    p.add_argument("--json", action="store_true", help="print the differences as JSON")
    p.set_defaults(handler=run)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'versions': {'torch': '2.13'}} -> {'versions.torch': '2.13'}; lists stay values."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, name) if isinstance(value, dict) and value else {name: value})
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """Per section, {field: [value in A, value in B]} for the fields that differ (plus HEADLINE)."""
    result = {}
    for section in SECTIONS:
        left, right = flatten(a.get(section) or {}), flatten(b.get(section) or {})
        fields = list(dict.fromkeys([*left, *right]))
        result[section] = {f: [left.get(f), right.get(f)] for f in fields
                           if left.get(f) != right.get(f) or (section == "measurements" and f in HEADLINE)}
    return result


def caveats(a: Any, b: Any) -> list[str]:
    """Why B-vs-A numbers may not compare like for like: other hardware, other peak metric."""
    notes = []
    there, here = a.fingerprint.device_name, b.fingerprint.device_name
    if there != here:
        notes.append(f"measured on different devices ({there} vs {here}): latencies differ by hardware too")
    if a.best.peak_metric != b.best.peak_metric:
        notes.append(f"the peaks are different metrics ({a.best.peak_metric} vs {b.best.peak_metric}); "
                     "compare them only as rough sizes")
    return notes


def run(args: argparse.Namespace) -> int:
    from autotune.profiles.profile import Profile

    a, b = Profile.load(args.a), Profile.load(args.b)
    diff = compare(a.to_dict(), b.to_dict())
    if args.json:
        print_json({"a": args.a, "b": args.b, "notes": caveats(a, b), **diff})
        return 0
    print(f"A  {args.a}\nB  {args.b}")
    for note in caveats(a, b):
        print(f"note: {note}")
    for section in SECTIONS:
        rows = diff[section]
        if section == "measurements":
            print(f"\n{section} (best)")
            print(table(["", "A", "B", "B vs A"],
                        [(f, _value(f, x), _value(f, y), _change(x, y)) for f, (x, y) in rows.items()]))
        elif not rows:
            print(f"\n{section}: same")
        else:
            print(f"\n{section}")
            print(table(["", "A", "B"], [(f, _value(f, x), _value(f, y)) for f, (x, y) in rows.items()]))
    return 0


def _value(field: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if field.endswith("_bytes") or field == "max_vram" or field.startswith("memory."):
        return size(value)
    if field.endswith("_s"):
        return seconds(value)
    return str(value)


def _change(a: Any, b: Any) -> str:
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not a:
        return ""
    return f"{(b - a) / a:+.1%}"
