"""Model identity: one name for every spelling of the same model, so a profile made from
`./sd`, `/abs/sd` or a hub cache snapshot finds the pipeline loaded from any of them.

Built-ins stay as they are, folders become resolved absolute paths (a hub cache snapshot
`org/name@commit`), hub ids `org/name@commit` when the commit is known.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.models.builtins import BUILTIN_PREFIX

if TYPE_CHECKING:
    from autotune.profiles.profile import Profile

_REVISION = re.compile(r"[0-9a-f]{40}")
_SNAPSHOT = re.compile(r"(?:^|/)models--(?P<repo>[^/]+)/snapshots/(?P<revision>[0-9a-f]{40})(?:/|$)")


def model_identity(model: str, revision: str | None = None) -> str:
    """One name for every spelling of the same model: built-ins as they are; a local folder as its
    resolved absolute path (a hub cache snapshot folder as `org/name@commit`); a hub id as
    `org/name@commit` when the commit is known (given, or the cached snapshot's), else the id."""
    if model.startswith(BUILTIN_PREFIX):
        return model
    path = Path(model).expanduser()
    if path.is_dir():
        resolved = path.resolve()
        snapshot = _SNAPSHOT.search(resolved.as_posix())
        if snapshot:
            return f"{snapshot['repo'].replace('--', '/', 1)}@{snapshot['revision']}"
        return str(resolved)
    commit = _cached_commit(model, revision)
    return f"{model}@{commit}" if commit else model


def _cached_commit(repo_id: str, revision: str | None) -> str | None:
    if revision and _REVISION.fullmatch(revision):
        return revision
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "model_index.json", revision=revision)
    except ValueError:  # not a valid repo id (huggingface_hub's HFValidationError)
        return None
    if isinstance(found, str):
        snapshot = _SNAPSHOT.search(Path(found).as_posix())
        return snapshot["revision"] if snapshot else None
    return None


def split_identity(identity: str) -> tuple[str, str | None]:
    """(model, commit or None): hub identities carry `@commit`; paths and built-ins never do."""
    if identity.startswith(BUILTIN_PREFIX) or Path(identity).is_absolute():
        return identity, None
    base, sep, commit = identity.rpartition("@")
    return (base, commit) if sep and _REVISION.fullmatch(commit) else (identity, None)


def same_model(a: str, b: str) -> bool:
    """Two identities name the same model: same path, built-in or hub id, and the same commit
    where both know theirs."""
    (base_a, rev_a), (base_b, rev_b) = split_identity(a), split_identity(b)
    return base_a == base_b and (rev_a is None or rev_b is None or rev_a == rev_b)


#: The fingerprint key a search may record the model's identity under (an absolute folder path,
#: or `org/name@commit`), so a relative `target.model` still matches from another directory.
MODEL_IDENTITY_KEY = "model_identity"


def pipe_identity(pipe: Any) -> str:
    """The identity of the model a pipeline was loaded from (what diffusers kept as `name_or_path`)."""
    return model_identity(str(getattr(pipe, "name_or_path", "") or ""))


def profile_identities(profile: Profile) -> list[str]:
    """The identities a profile's model may have: `target.model` resolved here, and the identity
    recorded when it was made (if any)."""
    found = [model_identity(profile.target.model)]
    stored = profile.fingerprint.model_identity
    if stored and stored not in found:
        found.append(stored)
    return found


def matches_model(profile: Profile, identity: str) -> bool:
    return any(same_model(candidate, identity) for candidate in profile_identities(profile))
