"""Where a report's study lives: the one behind a profile, or the latest in a run directory.

A profile records its study (`search.storage`, `search.study_name`); a run directory holds
`studies.journal`, whose most recently started study is the default. The storage a profile names
may be relative to where the search ran, so it is also looked for beside the profile.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from autotune.errors import StudyError
from autotune.search.options import STUDIES_FILE

JOURNAL_NAME = STUDIES_FILE


@dataclasses.dataclass(frozen=True)
class StudySource:
    storage: str
    study_name: str
    #: The profile the report was asked for (None for a run directory).
    profile: Any = None
    #: The path the user gave.
    given: str = ""


def locate(path: str | Path, study_name: str | None = None) -> StudySource:
    """The study for `path`: a profile YAML, a run directory, a journal file or a database URL."""
    text = str(path)
    if "://" in text:
        return StudySource(text, _pick_study(text, study_name), given=text)
    path = Path(path)
    if not path.exists():
        raise StudyError(f"{text!r} does not exist; give a profile YAML or a run directory "
                         f"(the --run-dir of `autotune search`, default .autotune)")
    if path.is_dir():
        journal = path / JOURNAL_NAME
        if not journal.is_file():
            raise StudyError(f"no {JOURNAL_NAME} in {text!r}; give the --run-dir a search used, or a profile YAML")
        return StudySource(str(journal), _pick_study(str(journal), study_name), given=text)
    if path.suffix in (".yaml", ".yml"):
        return _from_profile(path, study_name)
    return StudySource(text, _pick_study(text, study_name), given=text)  # a journal file


def _from_profile(path: Path, study_name: str | None) -> StudySource:
    from autotune.profiles.profile import Profile

    profile = Profile.load(path)
    stored = profile.search.storage
    if not stored:
        raise StudyError(f"profile {str(path)!r} names no study (no search.storage); give the run "
                         "directory of the search instead")
    storage = _resolve_storage(str(stored), path)
    name = study_name or profile.search.study_name
    return StudySource(storage, _pick_study(storage, name), profile=profile, given=str(path))


def _resolve_storage(stored: str, profile_path: Path) -> str:
    """A URL as is; a journal path as written if it exists here, else beside the profile."""
    if "://" in stored:
        return stored
    for candidate in (Path(stored), profile_path.parent / stored, profile_path.parent / Path(stored).name):
        if candidate.is_file():
            return str(candidate)
    raise StudyError(f"the study of {str(profile_path)!r} was stored in {stored!r}, which is not here; "
                     "run `autotune report` from where the search ran, or give its run directory")


def open_study(source: StudySource) -> Any:
    import optuna

    from autotune.search.ledger import open_storage

    return optuna.load_study(study_name=source.study_name, storage=open_storage(source.storage, must_exist=True))


def _pick_study(storage: str, wanted: str | None) -> str:
    """`wanted` if the storage holds it, else the most recently started study."""
    import optuna

    from autotune.search.ledger import open_storage

    summaries = optuna.get_all_study_summaries(open_storage(storage, must_exist=True))
    names = [s.study_name for s in summaries]
    if not names:
        raise StudyError(f"{storage} holds no study; run `autotune search` first")
    if wanted:
        if wanted not in names:
            raise StudyError(f"no study {wanted!r} in {storage}; it holds: {', '.join(sorted(names)[-5:])}"
                             f"{' (latest 5)' if len(names) > 5 else ''}")
        return wanted
    latest = max(summaries, key=lambda s: (s.datetime_start is not None, s.datetime_start or 0, s.study_name))
    return latest.study_name
