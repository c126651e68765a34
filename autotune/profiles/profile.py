"""The profile: a search's answer, saved as versioned YAML and read back strictly.

Read with `yaml.safe_load` only; knob names and values are checked against the registry, so a
profile from a newer autotune or a hand edit gone wrong fails loudly instead of half-applying.
Written atomically (temp file, fsync, os.replace): a crash never leaves a torn profile.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import os
import re
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from autotune.errors import AutotuneError, ProfileError
from autotune.hardware import Fingerprint
from autotune.knobs import Value
from autotune.knobs.space import check_values
from autotune.measure.timing import TimingRecord
from autotune.plain_record import Section
from autotune.search.confirm import Confirmation
from autotune.search.summary import SearchSummary
from autotune.target import Target

#: 2 added per-entry `timing` (median's 95% interval, spread), `phases` and `quality`, and the
#: profile's `confirmation` and `compile_artifacts`; version 1 files are still read (those fields
#: are then empty).
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclasses.dataclass
class CompileArtifacts:
    """The compile artifacts' sidecar (compile_cache.py): its file beside the profile, its hash
    and size, the key it is valid for, and the first call's seconds cold and with it (`warmup`).
    Read as leniently as the mapping it replaces: a field the file lacks stays empty, one of an
    unexpected type is kept as it is in `extra`."""

    file: str = ""
    sha256: str = ""
    bytes: int = 0
    key: Section = dataclasses.field(default_factory=dict)
    #: "cold" and "with_artifacts" (seconds), once `autotune warmup` measured them.
    first_call_s: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Fields this autotune does not know, kept so a newer file round-trips.
    extra: Section = dataclasses.field(default_factory=dict)

    def to_dict(self) -> Section:
        data: Section = {"file": self.file, "sha256": self.sha256, "bytes": self.bytes, "key": self.key}
        if self.first_call_s:
            data["first_call_s"] = dict(self.first_call_s)
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: Section) -> CompileArtifacts:
        """Each known field of the type this autotune writes; anything else is kept in `extra`."""
        types = {"file": str, "sha256": str, "bytes": int, "key": dict, "first_call_s": dict}
        known = {k: v for k, v in data.items() if k in types and isinstance(v, types[k]) and not isinstance(v, bool)}
        return cls(**known, extra={k: v for k, v in data.items() if k not in known})


@dataclasses.dataclass
class ProfileEntry:
    """One measured configuration: its settings and what it cost."""

    settings: dict[str, Value]
    latency_median_s: float
    latency_p90_s: float
    peak_bytes: int
    peak_metric: str
    runs: int
    memory: dict[str, int] = dataclasses.field(default_factory=dict)
    #: What the planner predicted for this entry before it was measured (None without planner).
    predicted_peak_bytes: int | None = None
    #: The timed runs' statistics: runs, median, 95% interval of the median, spread (empty: none).
    timing: TimingRecord = dataclasses.field(default_factory=TimingRecord.none)
    #: Where the trial's time went (seconds): spawn, build, apply, first run, timed runs, overhead.
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Its output against the reference: psnr_db, ssim, latent_rel_error and the sanity numbers
    #: (quality.py).
    quality: dict[str, float] = dataclasses.field(default_factory=dict)
    #: What `quality` is against, in words ("the fp32 reference (every knob at its exact default,
    #: without the memory ceiling)"), or why it was not judged. None in profiles written before it.
    quality_against: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.timing, Mapping):  # a plain mapping, read through its codec
            self.timing = TimingRecord.from_dict(self.timing)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileEntry:
        _require(data, ("settings", "latency_median_s", "latency_p90_s", "peak_bytes", "peak_metric", "runs"))
        entry = cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})
        for name in ("latency_median_s", "latency_p90_s"):
            _require_number(name, getattr(entry, name), (int, float))
        for name in ("peak_bytes", "runs"):
            _require_number(name, getattr(entry, name), (int,))
        if entry.predicted_peak_bytes is not None:
            _require_number("predicted_peak_bytes", entry.predicted_peak_bytes, (int,))
        if not isinstance(data.get("timing", {}), dict):
            raise ProfileError("'timing' must be a mapping")
        for name in ("memory", "phases", "quality"):
            if not isinstance(getattr(entry, name), dict):
                raise ProfileError(f"'{name}' must be a mapping")
        if entry.quality_against is not None and not isinstance(entry.quality_against, str):
            raise ProfileError(f"'quality_against' must be text, got {entry.quality_against!r}")
        entry.settings = check_values(dict(entry.settings))
        return entry


@dataclasses.dataclass
class Profile:
    target: Target
    #: Where it was measured (hardware.fingerprint, plus the model's identity and how the ceiling
    #: was enforced): device, device_name, total_memory_bytes, versions, ...
    fingerprint: Fingerprint
    best: ProfileEntry
    #: The search's summary (search.trials.search_summary): trials measured, why it stopped, ...
    search: SearchSummary = dataclasses.field(default_factory=lambda: SearchSummary.from_dict({}))
    alternatives: list[ProfileEntry] = dataclasses.field(default_factory=list)
    #: The interleaved re-measurement of the top candidates (search.confirm): the margin over the
    #: runner-up and whether it is significant. None if not confirmed.
    confirmation: Confirmation | None = None
    #: The compile artifacts' sidecar. None when nothing compiles or no warmup ran.
    compile_artifacts: CompileArtifacts | None = None
    created: str = dataclasses.field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    )
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        """Sections given as plain mappings (as code written before the typed records passed them)
        are read through their codec."""
        if isinstance(self.fingerprint, Mapping):
            self.fingerprint = Fingerprint.from_dict(self.fingerprint)
        if isinstance(self.search, Mapping):
            self.search = SearchSummary.from_dict(self.search)
        if isinstance(self.confirmation, Mapping):
            self.confirmation = Confirmation.from_dict(self.confirmation)

    @property
    def settings(self) -> dict[str, Value]:
        return self.best.settings

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "created": self.created,
            "target": self.target.to_dict(),
            "fingerprint": self.fingerprint.to_dict(),
            "settings": self.best.settings,
            "measurements": _entry_measurements(self.best),
            "search": self.search.to_dict(),
            "confirmation": self.confirmation.to_dict() if self.confirmation is not None else None,
            "compile_artifacts": self.compile_artifacts.to_dict() if self.compile_artifacts else None,
            "alternatives": [
                {"settings": alt.settings, "measurements": _entry_measurements(alt)}
                for alt in self.alternatives
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "profile") -> Profile:
        try:
            if not isinstance(data, dict):
                raise ProfileError("expected a YAML mapping at the top level")
            version = data.get("schema_version")
            if version not in READABLE_VERSIONS:
                raise ProfileError(
                    f"schema_version {version!r} is not supported (this autotune reads versions "
                    f"{', '.join(map(str, READABLE_VERSIONS))}); re-run `autotune search` or upgrade autotune"
                )
            _require(data, ("target", "fingerprint", "settings", "measurements"))
            return cls(
                target=Target.from_dict(dict(data["target"])),
                fingerprint=Fingerprint.from_dict(dict(data["fingerprint"])),
                best=_entry(data),
                search=SearchSummary.from_dict(dict(data.get("search") or {})),
                alternatives=[_entry(alt) for alt in data.get("alternatives") or []],
                confirmation=_confirmation(data),
                compile_artifacts=_compile_artifacts(data),
                created=str(data.get("created", "")),
                schema_version=SCHEMA_VERSION,  # read as the current version; saved as such
            )
        except AutotuneError as exc:
            raise ProfileError(_with_fix(f"{source}: {exc}")) from None
        except (TypeError, AttributeError, ValueError, RecursionError) as exc:
            raise ProfileError(_with_fix(f"{source}: malformed profile ({str(exc)[:200]})")) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(Path(path), self.to_yaml())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        """Read a profile strictly: every way a file can be wrong is one `ProfileError` line."""
        path = Path(path)
        return cls.from_dict(_parse_yaml(_read_text(path), path), source=str(path))


def _with_fix(message: str) -> str:
    """A profile error names the way out: write the profile again (or upgrade, said already)."""
    message = " ".join(message.split())  # one line, whatever the bad value held
    if "autotune search" in message or "upgrade autotune" in message:
        return message
    return f"{message}; fix the file or re-run `autotune search` to rewrite it"


#: A real profile is a few KB; anything this large is not one (and is not read into memory).
MAX_PROFILE_BYTES = 4 * 2**20


def _read_text(path: Path) -> str:
    try:
        if path.is_dir():
            raise ProfileError(f"profile {str(path)!r} is a folder; pass the profile YAML file inside it")
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{path} is {size / 2**20:.1f} MiB, not a profile (profiles are a few KB); "
                               "pass a profile YAML written by `autotune search`")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"profile {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ProfileError(f"cannot read profile {str(path)!r}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path} is not a text file (binary data at byte {exc.start}); "
                           "pass a profile YAML written by `autotune search`") from None
    if not text.strip():
        raise ProfileError(f"{path} is empty; re-run `autotune search` to write the profile")
    return text


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:  # !!python/... and other tags safe_load refuses
        tag = _tag_of(exc)
        raise ProfileError(f"{path} uses the YAML tag {tag}, which profiles never contain (a profile is "
                           "plain data); refusing to read it: use a profile written by `autotune search`") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ProfileError(f"{path} is not valid YAML{where}; re-run `autotune search` to rewrite it") from None
    except RecursionError:  # deeply nested flow collections
        raise ProfileError(f"{path} is nested too deeply to be a profile; re-run `autotune search`") from None


def _tag_of(exc: yaml.YAMLError) -> str:
    match = re.search(r"tag '([^']+)'", str(exc))
    tag = match.group(1) if match else "?"
    return tag.replace("tag:yaml.org,2002:", "!!")


def _entry_measurements(entry: ProfileEntry) -> dict[str, Any]:
    data = {f.name: getattr(entry, f.name) for f in dataclasses.fields(entry) if f.name != "settings"}
    return {**data, "timing": entry.timing.to_dict(),
            **{k: dict(data[k]) for k in ("memory", "phases", "quality")}}


def _entry(data: dict[str, Any]) -> ProfileEntry:
    measurements = data.get("measurements")
    if not isinstance(measurements, dict):
        raise ProfileError("'measurements' must be a mapping")
    return ProfileEntry.from_dict({"settings": data.get("settings"), **measurements})


def _compile_artifacts(data: dict[str, Any]) -> CompileArtifacts | None:
    record = _optional_mapping(data, "compile_artifacts")
    return CompileArtifacts.from_dict(record) if record is not None else None


def _confirmation(data: dict[str, Any]) -> Confirmation | None:
    record = _optional_mapping(data, "confirmation")
    return Confirmation.from_dict(record) if record is not None else None


def _optional_mapping(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise ProfileError(f"'{key}' must be a mapping")
    return dict(value) if value is not None else None


def _require_number(name: str, value: Any, types: tuple[type, ...]) -> None:
    if isinstance(value, bool) or not isinstance(value, types) or value < 0:
        kind = "a whole number" if types == (int,) else "a number"
        raise ProfileError(f"'{name}' must be {kind} >= 0, got {value!r}")


def _require(data: dict[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise ProfileError(f"missing field(s): {', '.join(missing)}")
    if "settings" in keys and not isinstance(data["settings"], dict):
        raise ProfileError("'settings' must be a mapping of knob: value")


def atomic_write_text(path: Path, text: str) -> Path:
    """Write via a temp file in the same folder, fsync, rename over the target, fsync the folder.

    A kill at any moment leaves the old file or the new one, never a torn one. What a kill can
    leave is the temp file (`.NAME.HOST-PID.XXXX.tmp`): profile discovery ignores it (it does not
    end in .yaml) and the next save of the same profile removes those whose writer is dead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    remove_stale_temps(path)
    return path


def _temp_prefix(path: Path) -> str:
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:32] or "host"
    return f".{path.name}.{host}-"


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove temp files of `path` left by killed writers on this host; returns what was removed.
    A temp of a writer still alive (another process saving right now) is left alone."""
    prefix = _temp_prefix(path)
    removed = []
    for tmp in path.parent.glob(f"{glob_escape(prefix)}*.tmp"):
        pid_text = tmp.name[len(prefix):].split(".", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def glob_escape(text: str) -> str:
    return glob.escape(text)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it keeps the new file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder
        pass
    finally:
        os.close(fd)
