"""Searches on a real PostgreSQL server (Optuna's RDB storage), not only on the journal file.

The server is the one `.ci/run` started ($AUTOTUNE_TEST_POSTGRES_URL), or one this session starts
itself when the PostgreSQL binaries are here (tests/pg.py); without either these tests skip and
say why. Every test gets a database of its own.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import optuna
import pytest

import pg
from helpers.fakes import FakeMeasurer
from autotune.knobs import Context
from autotune.knobs.space import SearchSpace, assignment_key
from autotune.search.study import Search
from autotune.target import Target


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a running server (its `postgres` maintenance database is left alone)."""
    url = os.environ.get(pg.URL_ENV)
    if url:
        pg.wait_ready(url)
        yield url
        return
    base = Path(tempfile.mkdtemp(prefix="autotune-pg-", dir="/tmp"))
    try:
        url = pg.start(base)
        pg.wait_ready(url)
    except pg.Unavailable as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        yield url
    finally:
        pg.stop(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the server, dropped afterwards."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        from sqlalchemy.pool import NullPool  # noqa: F401  (connections of the test are closed by now)

        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _target() -> Target:
    return Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=100 * 2**20)


def _space() -> SearchSpace:
    ctx = Context(device="cpu", components=frozenset({"unet", "vae", "text_encoder"}))
    return SearchSpace(ctx, exclude=["layerwise_fp8", "channels_last", "attention", "vae_tiling", "vae_dtype"])


def _cost(a):
    latency = {"fp32": 2.0, "fp16": 1.0, "bf16": 1.1}[a["dtype"]] + (0.3 if a["vae_slicing"] else 0)
    return latency, {"fp32": 80, "fp16": 40, "bf16": 40}[a["dtype"]] * 2**20


def test_a_search_on_postgres_resumes_from_a_second_search_object(postgres_url):
    first_fake = FakeMeasurer(_cost)
    first = Search(_target(), _space(), first_fake, storage=postgres_url, confirm=False)
    first.run(3)
    second_fake = FakeMeasurer(_cost)
    second = Search(_target(), _space(), second_fake, storage=postgres_url, resume=True, confirm=False)
    assert second.study_name == first.study_name
    result = second.run(3)
    measured = [assignment_key(j.assignment) for j in first_fake.jobs + second_fake.jobs]
    assert len(measured) == len(set(measured)) == 6  # none measured twice, across processes' objects
    assert len(result.records) == 6 == _space().size()
    assert {r.number for r in first.measured} <= {r.number for r in result.records}
    assert result.best.assignment == {**_space().default(), "dtype": "fp16", "vae_slicing": False}
    assert result.storage == postgres_url


def test_the_server_is_postgres(postgres_url):
    """(So the test above is not quietly running on something else.)"""
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as conn:
        version = conn.execute(sqlalchemy.text("select version()")).scalar()
    engine.dispose()
    assert version.startswith("PostgreSQL")


# -- autotune export: the profile of a stored study, measured by whoever -------------------------

def _export(capsys, *args):
    from helpers.cli import cli

    return cli(capsys, "export", *args)


def _searched(storage) -> Search:
    search = Search(_target(), _space(), FakeMeasurer(_cost), storage=storage, confirm=False)
    search.run(4)
    return search


def test_export_writes_the_profile_of_a_journal_study_and_writes_nothing_else(tmp_path, capsys):
    from autotune.profiles.profile import Profile
    from autotune.jobs import profile_from

    journal = tmp_path / "s.journal"
    search = _searched(journal)
    before = journal.read_bytes()
    run = _export(capsys, "--storage", journal, "--study", search.study_name, "--out", tmp_path / "p.yaml")
    assert run.code == 0, run.err
    exported = Profile.load(tmp_path / "p.yaml")
    expected = profile_from(search.result())
    assert exported.best.settings == expected.best.settings
    assert [a.settings for a in exported.alternatives] == [a.settings for a in expected.alternatives]
    assert exported.search.trials_measured == 4
    assert journal.read_bytes() == before  # reading a study writes nothing to it


def test_export_from_postgres(postgres_url, tmp_path, capsys):
    from autotune.profiles.profile import Profile

    search = _searched(postgres_url)
    run = _export(capsys, "--storage", postgres_url, "--study", search.study_name, "--out", tmp_path / "p.yaml")
    assert run.code == 0, run.err
    assert Profile.load(tmp_path / "p.yaml").best.settings == search.result().best.assignment


def test_export_of_an_unknown_study_is_one_line(tmp_path, capsys):
    journal = tmp_path / "s.journal"
    search = _searched(journal)
    run = _export(capsys, "--storage", journal, "--study", "nope", "--out", tmp_path / "p.yaml")
    run.one_line_error("no study 'nope'", search.study_name)
    assert not (tmp_path / "p.yaml").exists()


def test_export_refuses_an_existing_out_and_a_missing_storage(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("mine")
    _export(capsys, "--storage", tmp_path / "s.journal", "--study", "x", "--out", tmp_path / "p.yaml"
            ).one_line_error("exists", "--force")
    assert (tmp_path / "p.yaml").read_text() == "mine"
    _export(capsys, "--storage", "postgres://u@h/db", "--study", "x", "--out", tmp_path / "q.yaml"
            ).one_line_error("postgresql://") if hasattr(
        __import__("autotune.search.study", fromlist=["x"]), "read_result") else None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


# -- many workers, one study ------------------------------------------------------------------------

@pytest.mark.slow
def test_three_workers_share_a_study_and_a_killed_ones_trial_is_retried(postgres_url, tmp_path):
    """3 `autotune search` processes on one PostgreSQL study, one SIGKILLed mid-trial: exactly the
    requested trials are measured, none twice, and the dead worker's trial is measured by another."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    trials = 6
    env = {**os.environ, "AUTOTUNE_HEARTBEAT_S": "1", "AUTOTUNE_HEARTBEAT_GRACE_S": "4"}
    base = [sys.executable, "-m", "autotune.cli.main", "search", "--max-vram", "2GB", "--height", "64",
            "--width", "64", "--steps", "4", "--trials", str(trials), "--runs", "3", "--max-run-time", "2",
            "--exclude", "dtype=fp16", "--storage", postgres_url, "--study", "shared", "--no-confirm"]
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(3)]
    procs = [subprocess.Popen([*base, "--out", str(tmp_path / f"p{i}.yaml"), "--run-dir", str(tmp_path / f"run{i}")],
                              env=env, stdout=logs[i], stderr=subprocess.STDOUT) for i in range(3)]
    try:
        victim = f"{socket.gethostname()}:{procs[0].pid}"
        storage = optuna.storages.RDBStorage(postgres_url)  # one pool: a storage per poll would leak connections
        killed_trial = None
        deadline = time.monotonic() + 240
        while killed_trial is None and time.monotonic() < deadline and procs[0].poll() is None:
            try:
                study = optuna.load_study(study_name="shared", storage=storage)
            except KeyError:
                time.sleep(0.5)
                continue
            running = [t for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
                       if t.user_attrs.get("autotune:worker") == victim]
            if running:
                procs[0].send_signal(signal.SIGKILL)
                killed_trial = running[0]
            time.sleep(0.2)
        assert killed_trial is not None, "the victim never measured a trial"
        codes = [proc.wait(timeout=300) for proc in procs[1:]]
    finally:  # a failed test leaves no worker behind (its database is dropped next)
        for proc in procs:
            proc.kill()
            proc.wait()
    study = optuna.load_study(study_name="shared", storage=storage)
    with open(tmp_path / "trials.txt", "w") as out:  # for whoever reads a failure (--basetemp keeps it)
        for t in study.trials:
            print(t.number, t.state.name, t.datetime_start, t.datetime_complete, t.system_attrs,
                  {k: v for k, v in t.user_attrs.items() if k != "measurement"}, file=out)
    for i, code in enumerate(codes, 1):
        assert code == 0, (tmp_path / f"worker{i}.log").read_text()[-1500:]
    measured = [t for t in study.get_trials() if "measurement" in t.user_attrs and "duplicate_of" not in t.user_attrs]
    keys = [assignment_key(t.user_attrs["assignment"]) for t in measured]
    assert len(measured) == trials and len(set(keys)) == trials  # none lost, none twice
    assert study.trials[killed_trial.number].state == optuna.trial.TrialState.FAIL
    assert any(t.params == killed_trial.params for t in measured)  # measured again by another worker


def test_a_trial_keeps_its_heartbeat_from_its_claim_to_its_tell(postgres_url, tmp_path, monkeypatch):
    """A worker whose quality reference is another's makes its own before its first trial, in a
    measurement of its own: that used to run with no heartbeat after the claim's first one, so
    another worker failed the trial as dead and this one crashed telling it (UpdateFinishedTrialError)."""
    import time

    from helpers.fakes import fake_measurement
    from autotune.search import shared_study

    monkeypatch.setattr(shared_study, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(shared_study, "GRACE_S", 1)
    first = Search(_target(), _space(), FakeMeasurer(_cost), storage=postgres_url, study_name="s",
                   reference_dir=tmp_path / "a", confirm=False)
    first.run(1)  # the reference trial

    def slow_reference(job, *, timeout_s=None):
        if job.save_reference:  # longer than the grace period, then another worker looks for the dead
            time.sleep(2.5)
            shared_study.fail_stale(first.study)
        return fake_measurement(job)

    second = Search(_target(), _space(), slow_reference, storage=postgres_url, study_name="s",
                    reference_dir=tmp_path / "b", confirm=False)
    result = second.run(2)
    assert len(result.records) == 2
    assert not second.study.get_trials(states=(optuna.trial.TrialState.FAIL,))


def test_workers_opening_a_fresh_postgres_database_together_all_get_it(postgres_url):
    """`autotune search` processes started together on an empty database all create Optuna's
    tables at once; the ones that lose that race open the storage again (README's two-worker block)."""
    from test_storage import open_together

    assert open_together(postgres_url) == ["ok"] * 6
