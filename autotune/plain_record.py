"""Typed frozen records read from, and written back to, the plain mappings YAML and JSON hold:
the codec of a profile's open sections, kept at the package root because the packages that
write those sections (hardware, measure, search) use it and must not depend on profiles/.

The fingerprint (hardware.Fingerprint), the search summary (search.trials.SearchSummary), the
confirmation (search.confirm.Confirmation) and the timing statistics are written by their own
packages and read here as leniently as the free mappings they replace: a field the file lacks
keeps its default, one of a type the record does not expect (a hand edit, a newer autotune) is
kept as it came in `extra`, and so is any key the record does not know. Each record remembers the
keys it was read from, in their order (`layout`), so a profile reads back and writes the same YAML.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

#: What YAML's safe loader yields and `safe_dump` writes.
PlainData = str | int | float | bool | None | list["PlainData"] | dict[str, "PlainData"]
Section = dict[str, PlainData]

_R = TypeVar("_R", bound="PlainRecord")
_NOT_RECORD = ("extra", "layout")


@dataclasses.dataclass(frozen=True)
class PlainRecord:
    """Base of a section's record. A subclass lists the types each field accepts in `TYPES`
    (None is always accepted: "not recorded"), and in `NESTED` the record class a mapping field
    (or each item of a list field) is read as."""

    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {}
    NESTED: ClassVar[dict[str, type[PlainRecord]]] = {}
    #: Keys this autotune does not know, or of an unexpected type, kept as they came.
    extra: Section = dataclasses.field(default_factory=dict, kw_only=True)
    #: The keys the record was read from, in their order (None: made in code).
    layout: tuple[str, ...] | None = dataclasses.field(default=None, compare=False, repr=False, kw_only=True)

    @classmethod
    def from_dict(cls: type[_R], data: Mapping[str, Any] | None) -> _R:
        known: dict[str, Any] = {}
        extra: Section = {}
        for key, value in (data or {}).items():
            read = _read(cls, key, value)
            if read is _UNFIT:
                extra[key] = value
            else:
                known[key] = read
        return cls(**known, extra=extra, layout=tuple(data or {}))

    def __bool__(self) -> bool:
        """False for an empty section (written `{}`: a profile without a search summary...)."""
        return bool(self.to_dict())

    def to_dict(self) -> Section:
        """The keys read, in their order (a record made in code: its fields, then `extra`)."""
        fields = [f for f in dataclasses.fields(self) if f.name not in _NOT_RECORD]
        names = [f.name for f in fields]
        order = (*names, *self.extra) if self.layout is None else self.layout
        # A field set in code after the read (dataclasses.replace) is written too.
        order = (*order, *(f.name for f in fields if f.name not in order and getattr(self, f.name) != _default(f)),
                 *(k for k in self.extra if k not in order))
        defaults = {f.name: _default(f) for f in fields}
        # A key kept in `extra` (read with an unexpected type) is written as it came, unless the
        # field was set since.
        return {k: self.extra[k] if k in self.extra and getattr(self, k, None) == defaults.get(k)
                else _plain(getattr(self, k)) for k in order if k in self.extra or k in names}


class _Unfit:
    pass


_UNFIT = _Unfit()


def _fits(value: Any, types: tuple[type, ...]) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def _read(cls: type[PlainRecord], key: str, value: Any) -> Any:
    if key in _NOT_RECORD or key not in cls.TYPES or not _fits(value, cls.TYPES[key]):
        return _UNFIT
    nested = cls.NESTED.get(key)
    if nested is None or value is None:
        return value
    if isinstance(value, list):
        if not all(isinstance(item, Mapping) for item in value):
            return _UNFIT
        return tuple(nested.from_dict(item) for item in value)
    return nested.from_dict(value)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _plain(value: Any) -> PlainData:
    if isinstance(value, PlainRecord):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value  # type: ignore[no-any-return]
