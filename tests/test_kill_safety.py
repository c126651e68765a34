"""kill -9 at random moments: a profile being written and a search being run lose nothing.

- Profiles: a writer process saves two profiles in turn, as fast as it can, and is SIGKILLed at
  random moments. After each kill the file is one of the two, whole (`Profile.load` reads it);
  a temp file a kill leaves behind is ignored by discovery and removed by the next save.
- Search: `autotune search` on the tiny CPU pipeline is SIGKILLed at random points, then resumed:
  the trials finished before each kill are kept, none is measured twice, the interrupted one is
  retried, and no worker outlives its killed parent.
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autotune.profiles.profile import Profile, remove_stale_temps
from autotune.search.summary import SearchSummary
from helpers.profiles import tiny_profile

KILLS = 25

WRITER = textwrap.dedent("""
    import os, sys, time
    from autotune.profiles.profile import Profile
    a, b = Profile.load(sys.argv[1]), Profile.load(sys.argv[2])
    start = time.perf_counter()
    a.to_yaml()
    render_s = time.perf_counter() - start
    # A slow disk: the fsync between the temp file and the rename takes as long as rendering the
    # YAML (at least 30 ms), so about half of each save is inside the write, however loaded the
    # machine is.
    sync_s = max(0.03, render_s)
    real_fsync = os.fsync
    def slow_fsync(fd):
        time.sleep(sync_s)
        real_fsync(fd)
    os.fsync = slow_fsync
    out = sys.argv[3]
    a.save(out)
    print("ready", 2 * (render_s + sync_s), flush=True)  # and how long a save of b then a takes
    while True:
        b.save(out)
        a.save(out)
""")


def _profiles(tmp_path: Path) -> tuple[Path, Path]:
    """Two profiles that differ everywhere, big enough (~100 KB) that a kill often lands mid-write."""
    a, b = tiny_profile(latency=1.0), tiny_profile(latency=2.0, peak=2**21)
    for i, profile in enumerate((a, b)):
        profile.search = SearchSummary.from_dict({f"note_{n}": "x" * 60 * (i + 1) for n in range(800)})
    a.save(tmp_path / "a.yaml")
    b.save(tmp_path / "b.yaml")
    return tmp_path / "a.yaml", tmp_path / "b.yaml"


@pytest.mark.slow  # 20 s: many kills of a writer on a simulated slow disk
def test_a_profile_killed_mid_write_is_the_old_or_the_new_one(tmp_path):
    a, b = _profiles(tmp_path)
    expected = {Profile.load(a).to_yaml(): "a", Profile.load(b).to_yaml(): "b"}
    folder = tmp_path / "profiles"
    out = folder / "p.yaml"
    rng = random.Random(13)
    seen, leftovers = set(), 0
    for _ in range(KILLS):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(a), str(b), str(out)],
                                  stdout=subprocess.PIPE, text=True)
        ready, cycle_s = writer.stdout.readline().split()
        assert ready == "ready"
        time.sleep(rng.uniform(0.0, 1.5 * float(cycle_s)))  # inside a save of b, of a, or between
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        loaded = Profile.load(out)  # raises if torn
        seen.add(expected[loaded.to_yaml()])
        temps = [p for p in folder.iterdir() if p.name != "p.yaml"]
        assert all(p.name.startswith(".p.yaml.") and p.suffix == ".tmp" for p in temps), temps
        leftovers += len(temps)
        assert sorted(p.name for p in folder.glob("*.yaml")) == ["p.yaml"]  # discovery sees one profile
    assert seen == {"a", "b"}, "the kills never landed between two saves: the test proves nothing"
    assert leftovers > 0, "no kill landed inside a write: the test proves nothing"
    # The next save removes what killed writers left; only the profile remains.
    Profile.load(a).save(out)
    assert [p.name for p in folder.iterdir()] == ["p.yaml"]
    print(f"{KILLS} kills, {leftovers} temp files left by them, all removed by the next save")


def test_the_next_save_keeps_a_temp_file_of_a_live_writer(tmp_path):
    out = tmp_path / "p.yaml"
    tiny_profile().save(out)
    from autotune.profiles.profile import _temp_prefix

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        live_tmp = tmp_path / f"{_temp_prefix(out)}{sleeper.pid}.abc.tmp"
        dead_tmp = tmp_path / f"{_temp_prefix(out)}{dead.pid}.abc.tmp"
        other = tmp_path / f".other.yaml.{_temp_prefix(out).split('.')[-1]}{dead.pid}.abc.tmp"
        for path in (live_tmp, dead_tmp, other):
            path.write_text("partial")
        assert remove_stale_temps(out) == [dead_tmp]
        assert live_tmp.exists() and other.exists() and not dead_tmp.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


# -- the search driver, killed and resumed -------------------------------------------------------

SEARCH_ARGS = ["search", "--model", "builtin:tiny-sd", "--height", "64", "--width", "64", "--steps", "2",
               "--max-vram", "2GB", "--runs", "3", "--max-run-time", "1", "--no-confirm", "--no-planner",
               "--device", "cpu"]


def _workers_marked(marker: str) -> list[int]:
    """PIDs of live `autotune.measure.serve` processes whose environment carries `marker`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if b"autotune.measure.serve" not in cmdline or marker.encode() not in (proc / "environ").read_bytes():
                continue
            if (proc / "stat").read_text().split(")")[-1].split()[0] == "Z":
                continue  # a zombie waiting for its reaper is dead already
        except OSError:
            continue
        pids.append(int(proc.name))
    return pids


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _driver(run_dir: Path, trials: int, marker: str, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AUTOTUNE_KILL_TEST": marker}
    args = [*SEARCH_ARGS, "--trials", str(trials), "--run-dir", str(run_dir), "--out", str(run_dir / "p.yaml")]
    return subprocess.Popen([sys.executable, "-m", "autotune.cli.main", *args, *(["--resume"] if resume else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def _ledger(run_dir: Path) -> tuple[dict[int, dict], dict[int, dict], list[int]]:
    """(measured trials by number -> their measurement, assignment by number of every trial left
    RUNNING, trials closed as interrupted) read straight from the journal with optuna."""
    import optuna

    journal = run_dir / "studies.journal"
    if not journal.exists():
        return {}, {}, []
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    measured, running, failed_bare = {}, {}, []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            if "measurement" in attrs and "duplicate_of" not in attrs:
                measured[trial.number] = {"assignment": attrs["assignment"], "measurement": attrs["measurement"]}
            elif trial.state == optuna.trial.TrialState.RUNNING:
                running[trial.number] = dict(trial.params)
            elif trial.state == optuna.trial.TrialState.FAIL:
                failed_bare.append(trial.number)
    return measured, running, failed_bare


_TRIAL_LINE = re.compile(r"^\s*\d+\s+(feasible|over_ceiling|oom|failed|pruned)\b")


def _wait_for_trial_lines(driver: subprocess.Popen, count: int, timeout_s: float = 120) -> None:
    """Read the driver's progress until `count` trials have finished (or it ended)."""
    deadline = time.monotonic() + timeout_s
    seen, header = 0, False
    while (not header or seen < count) and time.monotonic() < deadline:
        line = driver.stderr.readline()
        if not line:
            return
        header = header or line.startswith("trial ")  # the study is open: its journal exists
        seen += bool(_TRIAL_LINE.match(line))


def _key(assignment: dict) -> tuple:
    return tuple(sorted(assignment.items()))


@pytest.mark.slow  # six real searches, ~45 s: the end-to-end tier CI also runs
def test_a_killed_search_resumes_without_losing_or_repeating_a_trial(tmp_path):
    """kill -9 of the driver at random points, 5 times, each followed by --resume: during start-up
    or the first trial, and a random moment after the first finished trial (mid-trial or between
    two). ~30 s: each round pays a CLI and a worker start-up."""
    marker = f"kill-{os.getpid()}-{time.monotonic_ns()}"
    rng = random.Random(5)
    run_dir = tmp_path / "run"
    interrupted: list[dict] = []
    kept_before: dict[int, dict] = {}
    orphans_seen = 0
    try:
        for round_ in range(5):
            driver = _driver(run_dir, trials=3, marker=marker, resume=(run_dir / "studies.journal").exists())
            finished = (0, 1, 1, 0, 1)[round_]
            _wait_for_trial_lines(driver, finished)  # 0: once the study is open, in the first trial
            time.sleep(rng.uniform(0.0, 2.5 if finished == 0 else 0.6))  # (its worker start-up included)
            driver.send_signal(signal.SIGKILL)
            driver.wait()
            driver.stderr.close()
            time.sleep(0.5)
            orphans = _workers_marked(marker)
            orphans_seen += len(orphans)
            _kill_all(orphans)  # (their own test is below; here they must not slow the next round)
            measured, running, _ = _ledger(run_dir)
            for number, record in kept_before.items():
                assert measured.get(number) == record, f"trial {number}, finished before a kill, was lost"
            kept_before = measured
            interrupted += [params for params in running.values() if params]
        final = _driver(run_dir, trials=1, marker=marker, resume=True)
        _, err = final.communicate(timeout=300)
        assert final.returncode == 0, err[-2000:]
        measured, running, failed = _ledger(run_dir)
    finally:
        _kill_all(_workers_marked(marker))
    assert not running, running
    for number, record in kept_before.items():
        assert measured[number] == record
    keys = [_key(r["assignment"]) for r in measured.values()]
    assert len(keys) == len(set(keys)), "an assignment was measured twice"
    assert interrupted, "no kill landed during a trial: the test proves nothing"
    for params in interrupted:  # each interrupted assignment was measured after all
        assert any(all(r["assignment"].get(k) == v for k, v in params.items()) for r in measured.values()), params
    print(f"{len(measured)} measured, {len(interrupted)} interrupted and retried, {orphans_seen} orphan workers")


def test_the_worker_dies_with_a_killed_driver(tmp_path):
    marker = f"orphan-{os.getpid()}-{time.monotonic_ns()}"
    driver = _driver(tmp_path / "run", trials=2, marker=marker, resume=False)
    try:
        deadline = time.monotonic() + 60
        while not _workers_marked(marker):
            assert driver.poll() is None and time.monotonic() < deadline, "no worker started"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 2
        while _workers_marked(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _workers_marked(marker), "the worker outlived its killed driver"
    finally:
        driver.stderr.close()
        _kill_all(_workers_marked(marker))
