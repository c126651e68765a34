"""Hostile and bad input, table-driven: each case is refused with one line that names the fix
(exit code 2 on the CLI, a specific `autotune.errors` exception in the API) and writes nothing.

CLI cases run in-process in an empty working directory (see test_cli_errors.py for the usage
errors argparse answers); API cases call the library directly.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from autotune.errors import (InvalidAssignmentError, InvalidTargetError, ProfileError, ProfileMismatchError, StudyError, UnknownKnobError)
from helpers.cli import cli, listing
from helpers.profiles import tiny_profile

SEARCH = ["search", "--device", "cpu", "--out", "p.yaml", "--run-dir", "run", "--max-vram", "2GB",
          "--trials", "1"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty cwd holding every kind of bad profile the cases point at."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    good = tiny_profile()
    good.save(tmp_path / "good.yaml")
    text = (tmp_path / "good.yaml").read_text()
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "truncated.yaml").write_text(text[: len(text) // 2])
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "nul.yaml").write_bytes(text.encode()[:40] + b"\x00\x00" + text.encode()[40:])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "python-tag.yaml").write_text(
        "schema_version: 2\ntarget: !!python/object/apply:os.system ['touch pwned']\n")
    (tmp_path / "future.yaml").write_text(text.replace("schema_version: 2", "schema_version: 99"))
    (tmp_path / "unknown-knob.yaml").write_text(text.replace("settings:\n", "settings:\n  turbo: true\n", 1))
    (tmp_path / "negative.yaml").write_text(text.replace("runs: 3", "runs: -3"))
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)) + "schema_version: *j\n"
    (tmp_path / "alias-bomb.yaml").write_text(bomb)
    with open(tmp_path / "huge.yaml", "w") as handle:  # 20 MB: far beyond any real profile
        handle.write(text)
        handle.truncate(20 * 2**20)  # (sparse: costs no time to write)
    (tmp_path / "folder.yaml").mkdir()
    cuda = tiny_profile(device="cuda")
    cuda.save(tmp_path / "cuda.yaml")
    return tmp_path


# -- CLI: (id, args, fragments of the one error line) -------------------------------------------

CLI_CASES = [
    # sizes
    ("vram-no-unit", [*SEARCH[:-3], "8"], ["'8GB'", "got '8'"]),
    ("vram-overflow", [*SEARCH[:-3], "9" * 400 + "TB"], ["--max-vram", "more than any device"]),
    ("vram-absurd", [*SEARCH[:-3], "99999TB"], ["--max-vram", "more than any device"]),
    ("vram-exponent", [*SEARCH[:-3], "1e3GB"], ["--max-vram", "'8GB'"]),
    ("vram-nan", [*SEARCH[:-3], "nanGB"], ["--max-vram", "'8GB'"]),
    ("vram-below-a-byte", [*SEARCH[:-3], "0.0000000001GB"], ["larger than zero"]),
    # resolutions, batch, steps, frames
    ("height-zero", [*SEARCH, "--height", "0"], ["--height must be a positive multiple of 8"]),
    ("width-negative", [*SEARCH, "--width", "-64"], ["--width must be a positive multiple of 8"]),
    ("width-odd", [*SEARCH, "--width", "65"], ["try 64 or 72"]),
    ("width-huge", [*SEARCH, "--width", "100000", "--height", "100000"], ["must be at most"]),
    ("batch-zero", [*SEARCH, "--batch", "0"], ["--batch must be 1 or more"]),
    ("batch-huge", [*SEARCH, "--batch", "100000"], ["--batch", "at most"]),
    ("steps-negative", [*SEARCH, "--steps", "-1"], ["--steps must be 1 or more"]),
    ("steps-huge", [*SEARCH, "--steps", "1000000"], ["--steps", "at most"]),
    ("frames-zero", [*SEARCH, "--frames", "0"], ["--frames must be 1 or more"]),
    ("frames-for-images", [*SEARCH, "--frames", "8"], ["leave --frames out"]),
    ("trials-zero", [*SEARCH[:-1], "0"], ["--trials must be 1 or more"]),
    ("precision-above-one", [*SEARCH, "--precision", "2"], ["--precision must be between 0 and 1"]),
    # knobs in include/exclude
    ("include-unknown-knob", [*SEARCH, "--include", "turbo"], ["unknown knob 'turbo'", "known knobs:"]),
    ("include-unknown-value", [*SEARCH, "--include", "dtype=fp64"], ["dtype takes one of"]),
    ("exclude-empty", [*SEARCH, "--exclude", ""], ["unknown knob ''", "known knobs:"]),
    ("exclude-empty-value", [*SEARCH, "--exclude", "dtype="], ["dtype=", "takes one of"]),
    # models
    ("unknown-builtin", [*SEARCH, "--model", "builtin:sd9"], ["unknown built-in model"]),
    ("unknown-hub-id-offline", [*SEARCH, "--model", "no-such-org/no-such-model"], ["cannot find model"]),
    ("missing-folder", [*SEARCH, "--model", "./missing-folder"], ["./missing-folder", "does not exist"]),
    ("empty-model", [*SEARCH, "--model", ""], ["--model"]),
    # profiles read by show / apply / diff
    ("show-empty", ["show", "empty.yaml"], ["empty.yaml", "empty"]),
    ("show-truncated", ["show", "truncated.yaml"], ["truncated.yaml", "autotune search"]),
    ("show-binary", ["show", "binary.yaml"], ["binary.yaml", "not a text file"]),
    ("show-nul-bytes", ["show", "nul.yaml"], ["nul.yaml", "not valid YAML"]),
    ("show-list", ["show", "list.yaml"], ["list.yaml", "mapping"]),
    ("show-python-tag", ["show", "python-tag.yaml"], ["python-tag.yaml", "python/object", "plain data"]),
    ("show-huge", ["show", "huge.yaml"], ["huge.yaml", "MiB", "not a profile"]),
    ("show-folder", ["show", "folder.yaml"], ["folder.yaml", "is a folder"]),
    ("show-future-schema", ["show", "future.yaml"], ["schema_version 99", "upgrade autotune"]),
    ("show-unknown-knob", ["show", "unknown-knob.yaml"], ["unknown knob 'turbo'"]),
    ("show-negative-runs", ["show", "negative.yaml"], ["'runs' must be a whole number >= 0"]),
    ("show-alias-bomb", ["show", "alias-bomb.yaml"], ["alias-bomb.yaml"]),
    ("diff-binary", ["diff", "good.yaml", "binary.yaml"], ["not a text file"]),
    ("apply-python-tag", ["apply", "python-tag.yaml", "--out", "x.png"], ["python/object"]),
    ("apply-other-device", ["apply", "cuda.yaml", "--out", "x.png"], ["runs on cuda", "--device cpu"]),
    # outputs
    ("out-is-a-folder", [*SEARCH[:3], "--out", "folder.yaml", *SEARCH[5:]], ["is a folder"]),
    ("out-unwritable", [*SEARCH[:3], "--out", "/proc/p.yaml", *SEARCH[5:]], ["/proc", "writable"]),
    ("run-dir-unwritable", [*SEARCH[:5], "--run-dir", "/proc/run", *SEARCH[7:]], ["/proc/run", "writable"]),
    # storage URLs
    ("storage-unknown-scheme", [*SEARCH, "--storage", "http://example.com/db"], ["http"]),
    ("storage-postgres-spelling", [*SEARCH, "--storage", "postgres://u@localhost/db"], ["postgres"]),
    ("storage-unreachable", [*SEARCH, "--storage", "postgresql://u@127.0.0.1:1/db"],
     ["127.0.0.1", "Connection refused"]),
    ("storage-password-hidden", [*SEARCH, "--storage", "postgresql://u:secret@127.0.0.1:1/db"], ["u:***@"]),
    ("storage-missing-driver", [*SEARCH, "--storage", "mysql://u@localhost/db"], ["pip install"]),
    ("storage-one-slash", [*SEARCH, "--storage", "postgresql:/localhost/db"], ["no '//'"]),
]


def _ids(cases: list) -> list[str]:
    return [c.values[0] if hasattr(c, "marks") else c[0] for c in cases]


@pytest.mark.parametrize("case_id, args, fragments", CLI_CASES, ids=_ids(CLI_CASES))
def test_cli_refuses_in_one_line_and_writes_nothing(workdir, capsys, monkeypatch, case_id, args, fragments):
    from autotune.search import study
    from autotune import jobs as tune

    def measured(*args, **kwargs):
        raise AssertionError("the search started measuring: the input was not refused")

    monkeypatch.setattr(study.Search, "run", measured)  # a case not refused fails fast
    monkeypatch.setattr(tune, "make_planner", lambda target: None)  # (no trace of a 100000 px image)
    before = listing(workdir)
    start = time.monotonic()
    run = cli(capsys, *args)
    run.one_line_error(*fragments)
    assert run.out == ""
    assert listing(workdir) == before
    assert "secret" not in run.err
    assert time.monotonic() - start < 30, "a refusal must come before any slow work"


# -- API: (id, call, exception, fragments) -------------------------------------------------------

def _target(**changes):
    from autotune.target import Target

    fields = dict(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**30)
    return Target(**{**fields, **changes})


def _size(text):
    from autotune.units import parse_size

    return parse_size(text)


def _load(name):
    from autotune.profiles.profile import Profile

    return Profile.load(name)


def _space(**selectors):
    from autotune.knobs import Context
    from autotune.knobs.space import SearchSpace

    return SearchSpace(Context(device="cpu", components=frozenset({"unet", "vae", "text_encoder"})), **selectors)


def _storage(url):
    from autotune.search.storage import open_storage

    return open_storage(url)


def _from_dict(data):
    from autotune.profiles.profile import Profile

    return Profile.from_dict(data, source="inline")


API_CASES = [
    ("size-no-unit", lambda: _size("8"), InvalidTargetError, ["'8GB'"]),
    ("size-bad-unit", lambda: _size("8XB"), InvalidTargetError, ["'8GB'"]),
    ("size-negative", lambda: _size("-1GB"), InvalidTargetError, ["--max-vram"]),
    ("size-overflow", lambda: _size("9" * 400 + "GB"), InvalidTargetError, ["more than any device"]),
    ("size-not-text", lambda: _size(None), InvalidTargetError, ["'8GB'"]),
    ("target-width-not-int", lambda: _target(width=64.0), InvalidTargetError, ["--width"]),
    ("target-batch-bool", lambda: _target(batch=True), InvalidTargetError, ["--batch"]),
    ("target-steps-zero", lambda: _target(steps=0), InvalidTargetError, ["--steps"]),
    ("target-ceiling-negative", lambda: _target(max_vram=-1), InvalidTargetError, ["--max-vram"]),
    ("target-device", lambda: _target(device="tpu"), InvalidTargetError, ["--device must be one of"]),
    ("target-frames", lambda: _target(frames=-2), InvalidTargetError, ["--frames"]),
    ("target-call-arg-list", lambda: _target(call_args={"x": [1]}), InvalidTargetError, ["--call-arg x"]),
    ("target-call-arg-name", lambda: _target(call_args={"not a name": 1}), InvalidTargetError, ["keyword"]),
    ("space-unknown-knob", lambda: _space(include=["turbo"]), UnknownKnobError, ["unknown knob 'turbo'"]),
    ("space-unknown-value", lambda: _space(exclude=["dtype=fp64"]), InvalidAssignmentError, ["takes one of"]),
    ("profile-missing", lambda: _load("missing.yaml"), ProfileError, ["does not exist"]),
    ("profile-empty", lambda: _load("empty.yaml"), ProfileError, ["empty"]),
    ("profile-binary", lambda: _load("binary.yaml"), ProfileError, ["not a text file"]),
    ("profile-python-tag", lambda: _load("python-tag.yaml"), ProfileError, ["python/object"]),
    ("profile-huge", lambda: _load("huge.yaml"), ProfileError, ["MiB"]),
    ("profile-future", lambda: _load("future.yaml"), ProfileError, ["schema_version 99"]),
    ("profile-alias-bomb", lambda: _load("alias-bomb.yaml"), ProfileError, ["schema_version"]),
    ("profile-dict-not-mapping", lambda: _from_dict([1, 2]), ProfileError, ["mapping"]),
    ("profile-target-unknown-field", lambda: _from_dict({**tiny_profile().to_dict(), "target": {"colour": 1}}),
     ProfileError, ["unknown target field"]),
    ("storage-malformed", lambda: _storage("postgresql://u@h:port/db"), StudyError, ["not a valid URL"]),
    ("storage-one-slash", lambda: _storage("sqlite:studies.db"), StudyError, ["no '//'"]),
    ("storage-missing-driver", lambda: _storage("postgresql+asyncpg://u@h/db"), StudyError, ["pip install 'asyncpg'"]),
    ("storage-unknown-driver", lambda: _storage("postgresql+nodriver://u@h/db"), StudyError, ["unknown driver"]),
    ("storage-unreachable", lambda: _storage("postgresql://u:secret@127.0.0.1:1/db"), StudyError,
     ["u:***@127.0.0.1", "server runs"]),
    ("storage-sqlite-no-folder", lambda: _storage("sqlite:////no/such/folder/s.db"), StudyError, ["folder"]),
    ("storage-journal-is-folder", lambda: _storage("folder.yaml"), StudyError, ["is a folder"]),
]


@pytest.mark.parametrize("case_id, call, error, fragments", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_raises_a_specific_error_in_one_line(workdir, case_id, call, error, fragments):
    before = listing(workdir)
    start = time.monotonic()
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "secret" not in message
    assert listing(workdir) == before  # (python-tag.yaml's `touch pwned` did not run either)
    assert time.monotonic() - start < 10


# -- profiles for another model, pipeline class or device ----------------------------------------

def test_apply_profile_refuses_another_model_and_pipeline_class(tiny_pipe, workdir):
    import dataclasses

    from autotune.profiles.apply import apply_profile

    profile = tiny_profile()
    other_model = dataclasses.replace(profile, target=dataclasses.replace(profile.target, model="builtin:sd15"))
    with pytest.raises(ProfileMismatchError, match="tuned for model 'builtin:sd15'.*strict=False"):
        apply_profile(tiny_pipe, other_model)
    other_class = dataclasses.replace(profile, target=dataclasses.replace(
        profile.target, pipeline_class="StableDiffusionXLPipeline"))
    with pytest.raises(ProfileMismatchError, match="StableDiffusionXLPipeline"):
        apply_profile(tiny_pipe, other_class)
    with pytest.raises(InvalidTargetError, match="runs on cuda.*device='cpu'"):
        apply_profile(tiny_pipe, workdir / "cuda.yaml")


def test_python_tags_never_run(workdir):
    with pytest.raises(ProfileError):
        _load("python-tag.yaml")
    assert not (workdir / "pwned").exists()
    assert yaml.safe_dump  # profiles are written with safe_dump only: nothing to construct on load


# -- an unreachable hub ---------------------------------------------------------------------------

def _search_unknown_hub_id(cwd: Path, offline: bool) -> tuple[subprocess.CompletedProcess, float]:
    """The CLI asked for a hub id that does not exist; the hub refuses connections unless offline."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(cwd / "hf"),
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))  # this checkout's autotune
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "autotune.cli.main", *SEARCH, "--model",
                               "no-such-org/no-such-model"], capture_output=True, text=True, env=env,
                              cwd=cwd, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the CLI took more than 120 s to refuse an unknown hub id")
    return done, time.monotonic() - start


@pytest.mark.slow  # 15-30 s on 2 CPU cores: the fast tier keeps under 5 minutes
def test_unreachable_hub_fails_fast_in_one_line(tmp_path):
    """HF_HUB_OFFLINE unset, the hub endpoint refuses connections: one line, in a few seconds.

    huggingface_hub alone retries for ~25 s. The bound is relative to the same refusal made offline,
    measured just before under the same load, so a busy machine slows both and the test stays true.
    """
    offline_dir, online_dir = tmp_path / "offline", tmp_path / "online"
    offline_dir.mkdir()
    online_dir.mkdir()
    _, offline_s = _search_unknown_hub_id(offline_dir, offline=True)
    done, online_s = _search_unknown_hub_id(online_dir, offline=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot find model" in lines[0], done.stderr[-2000:]
    assert online_s - offline_s < 8, f"online {online_s:.1f} s, offline {offline_s:.1f} s"
    assert sorted(p.name for p in online_dir.iterdir()) in ([], ["hf"])
