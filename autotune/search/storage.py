"""Where a study lives: a journal file (the embedded default) or a database URL.

`open_storage` turns every way this can go wrong into one `StudyError` line that names the fix,
before anything is written: a malformed URL, an unknown scheme, a driver that is not installed,
a server that does not answer (a connect timeout, not a hang), a database that does not exist.
Passwords in URLs never appear in messages.
"""
from __future__ import annotations

import logging
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from autotune.errors import StudyError

log = logging.getLogger(__name__)

#: Seconds a database connection may take before the URL counts as unreachable.
CONNECT_TIMEOUT_S = 10
#: SQLAlchemy backends Optuna's RDB storage works with, and the example URL each error shows.
_EXAMPLES = "sqlite:///studies.db, postgresql://USER@HOST/DB or a journal file path"
_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")
#: Scheme-like prefixes that mean the user meant a URL (so `postgresql:/h/db` is not a file name).
_URL_LIKE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?!//)")
_KNOWN_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
#: A driver's import name -> what to pip install.
_DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pymysql": "pymysql",
                    "MySQLdb": "mysqlclient", "asyncpg": "asyncpg", "pg8000": "pg8000"}


def is_url(storage: str | Path) -> bool:
    return "://" in str(storage)


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def check_url(url: str) -> Any:
    """Parse a database URL and check its driver imports, without connecting; returns the
    SQLAlchemy URL. Raises StudyError naming the fix."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = redact(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StudyError(f"--storage {shown!r} is not a valid URL ({_first_line(exc)}); use {_EXAMPLES}") from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        raise StudyError(f"--storage {shown!r}: the scheme is spelled postgresql://, not postgres://")
    if backend not in _BACKENDS:
        raise StudyError(f"--storage {shown!r}: unknown database '{backend}'; use {_EXAMPLES}")
    try:
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except NoSuchModuleError:
        raise StudyError(f"--storage {shown!r}: unknown driver '{parsed.get_driver_name()}'; "
                         f"leave it out (e.g. {backend}://...) for the default one") from None
    except ImportError as exc:
        module = (getattr(exc, "name", None) or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module or "the database driver")
        raise StudyError(f"--storage {shown!r} needs the {module or backend} driver, which is not "
                         f"installed; pip install '{package}'") from None
    return parsed


def open_storage(storage: str | Path, *, must_exist: bool = False, heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> optuna.storages.BaseStorage:
    """A database URL (sqlite:///..., postgresql://...) or a journal file path; every failure is
    one `StudyError` line. Heartbeats (seconds) apply to database storage only."""
    from sqlalchemy.exc import SQLAlchemyError

    text = str(storage)
    if is_url(text):
        return _open_rdb(text, heartbeat_interval, grace_period)
    match = _URL_LIKE.match(text)
    if match and match.group("scheme").lower() in _KNOWN_SCHEMES:
        raise StudyError(f"--storage {redact(text)!r} looks like a URL but has no '//' after "
                         f"'{match.group('scheme')}:'; use {_EXAMPLES}")
    path = Path(text)
    if must_exist and not path.exists():
        raise StudyError(f"nothing to resume: {text} does not exist; run without --resume to start")
    try:
        if path.is_dir():
            raise StudyError(f"the study journal {text!r} is a folder; give a file path or a database URL")
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    except (OSError, SQLAlchemyError) as exc:
        raise StudyError(f"cannot open the study journal {text!r} ({_first_line(exc)}); use a writable "
                         f"--run-dir or a --storage URL like {_EXAMPLES}") from None


def _open_rdb(url: str, heartbeat_interval: int | None, grace_period: int | None) -> optuna.storages.RDBStorage:
    from sqlalchemy.exc import SQLAlchemyError

    parsed = check_url(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() in ("postgresql", "mysql", "mariadb"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    kwargs: dict[str, Any] = {}
    if heartbeat_interval is not None:
        kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():  # heartbeats are stable in practice; Optuna flags them experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if heartbeat_interval is not None:
                    kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=3)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except SQLAlchemyError as exc:
            if attempt < SCHEMA_RACE_RETRIES and _lost_schema_race(exc):
                attempt += 1
                log.info("another process created the study tables of %s at the same time; opening again",
                         redact(url))
                time.sleep(0.2 * attempt)
                continue
            raise StudyError(_connect_message(redact(url), _first_line(exc))) from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise StudyError(_connect_message(redact(url), _first_line(exc))) from None


#: Workers started together on a fresh database all create Optuna's tables (`create_all` checks,
#: then creates: not atomic); the losers see "already exists" / a duplicate key. Opening again finds
#: the tables made.
SCHEMA_RACE_RETRIES = 3


def _lost_schema_race(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "already exists" in text or "duplicate key" in text or "unique constraint" in text


def _connect_message(shown: str, detail: str) -> str:
    lowered = detail.lower()
    if "does not exist" in lowered and "database" in lowered:
        fix = "create the database first (e.g. createdb NAME) or fix the URL's database name"
    elif "password" in lowered or "authentication" in lowered:
        fix = "check the user and password in the URL"
    elif "unable to open database file" in lowered:
        fix = "the SQLite file's folder must exist and be writable"
    else:
        fix = "check that the server runs and the URL's host, port and database are right"
    return f"cannot open the study storage {shown!r} ({detail[:200]}); {fix}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    text = re.sub(r"^\([\w.]+\)\s*", "", text.splitlines()[0])  # SQLAlchemy's "(psycopg.X) " prefix
    return text
