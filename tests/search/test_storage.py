"""Opening study storages (autotune/search/storage.py): workers that start together on a fresh database."""
from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest
from sqlalchemy.exc import OperationalError

from autotune.search import storage
from autotune.errors import StudyError

#: Opens the storage at argv[1] once the clock passes argv[2], so every process creates the tables
#: at the same moment; prints "ok" or the one-line error.
OPEN_TOGETHER = """
import sys, time
from autotune.search import storage
from autotune.errors import StudyError
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    storage.open_storage(sys.argv[1], heartbeat_interval=5, grace_period=20)
    print("ok")
except StudyError as exc:
    print(exc)
"""


def open_together(url: str, processes: int = 6) -> list[str]:
    start = time.time() + 4  # after every interpreter has imported autotune
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_TOGETHER, url, str(start)], stdout=subprocess.PIPE,
                              text=True) for _ in range(processes)]
    return [p.communicate(timeout=120)[0].strip() for p in procs]


def test_workers_opening_a_fresh_sqlite_database_together_all_get_it(tmp_path):
    assert open_together(f"sqlite:///{tmp_path}/fresh.db") == ["ok"] * 6


class _Flaky:
    """RDBStorage that loses the table-creation race `fails` times first."""

    def __init__(self, fails: int, message: str = "(sqlite3.OperationalError) table studies already exists"):
        self.calls, self.fails, self.message = 0, fails, message

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.fails:
            raise OperationalError("CREATE TABLE studies", {}, Exception(self.message))
        return "storage"


def test_a_lost_table_race_is_opened_again(monkeypatch):
    flaky = _Flaky(fails=2)
    monkeypatch.setattr(optuna.storages, "RDBStorage", flaky)
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    assert storage.open_storage("sqlite:///x.db") == "storage" and flaky.calls == 3


def test_other_database_errors_and_an_endless_race_are_one_line(monkeypatch):
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    flaky = _Flaky(fails=99)
    monkeypatch.setattr(optuna.storages, "RDBStorage", flaky)
    with pytest.raises(StudyError, match="already exists"):
        storage.open_storage("sqlite:///x.db")
    assert flaky.calls == storage.SCHEMA_RACE_RETRIES + 1
    refused = _Flaky(fails=99, message="connection refused")
    monkeypatch.setattr(optuna.storages, "RDBStorage", refused)
    with pytest.raises(StudyError, match="connection refused"):
        storage.open_storage("sqlite:///x.db")
    assert refused.calls == 1
