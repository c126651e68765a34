"""Every usage error is one line naming the fix, exit code 2, no traceback, and writes nothing.

In-process (`main([...])`), in an empty working directory: each case also checks that nothing
(no study folder, no profile, no image, no parent folder) was created.
"""
from __future__ import annotations

import pytest

from helpers.cli import cli, listing
from helpers.profiles import tiny_profile


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty cwd with a good profile, a corrupt one and a plain file, for paths to point at."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_profile().save(tmp_path / "good.yaml")
    (tmp_path / "bad.yaml").write_text("schema_version: 1\nsettings: [unclosed\n")
    (tmp_path / "file").write_text("")
    return tmp_path


SEARCH = ["search", "--device", "cpu", "--out", "p.yaml", "--run-dir", "run"]

PARSER_ERRORS = [  # answered by argparse: no torch, no library call
    (["search", "--max-vrma", "2GB"], ["unknown flag --max-vrma; did you mean --max-vram?",
                                       "(see `autotune search --help`)"]),
    (["search", "--mod", "builtin:tiny-sd", "--max-vram", "2GB"], ["unknown flag --mod; did you mean --model?"]),
    (["search", "--max", "3"], ["unknown flag --max; did you mean --max-"]),
    (["search", "--max-vram", "2GB", "--trial", "3"], ["unknown flag --trial; did you mean --trials?"]),
    (["search", "--max-vram=2GB", "--tirals=3"], ["unknown flag --tirals; did you mean --trials?"]),
    (["plan", "--trials", "3"], ["unknown flag --trials; it is a flag of `autotune search`",
                                 "`autotune plan --help`"]),
    (["search", "--max-vram", "8", "GB"], ["unexpected argument GB; did you mean --max-vram 8GB?",
                                           "(see `autotune search --help`)"]),
    (["search", "--max-vram=8", "GiB"], ["did you mean --max-vram=8GiB?"]),
    (["show", "good.yaml", "other.yaml"], ["unexpected argument other.yaml", "`autotune show --help`"]),
    (["search", "--trials", "3"], ["--max-vram", "`autotune search --help`"]),
    (["search", "--max-vram", "2GB", "--height", "abc"], ["invalid int value: 'abc'"]),
    (["serch"], ["unknown command 'serch'; did you mean search?", "(see `autotune --help`)"]),
    (["--verison"], ["unknown flag --verison; did you mean --version?"]),
    (["--debugg", "show", "good.yaml"], ["unknown flag --debugg; did you mean --debug?"]),
    ([], ["COMMAND", "(see `autotune --help`)"]),
    (["show"], ["profile", "`autotune show --help`"]),
    (["diff", "good.yaml"], ["B", "`autotune diff --help`"]),
    (["profiles", "a", "b"], ["unexpected argument b"]),
    (["env", "--jsn"], ["unknown flag --jsn; did you mean --json?"]),
]

VALUE_ERRORS = [  # the command runs and refuses, before any slow work
    ([*SEARCH, "--max-vram", "8"], ["'8GB'", "got '8'"]),
    ([*SEARCH, "--max-vram", "-1GB"], ["--max-vram", "got '-1GB'"]),
    ([*SEARCH, "--max-vram", "0GB"], ["larger than zero"]),
    ([*SEARCH, "--max-vram", "2GB", "--height", "100"], ["multiple of 8", "got 100", "try 96 or 104"]),
    ([*SEARCH, "--max-vram", "2GB", "--batch", "0"], ["--batch must be 1 or more"]),
    ([*SEARCH, "--max-vram", "2GB", "--model", "no-such-org/no-such-model"], ["cannot find model", "builtin:tiny-sd"]),
    ([*SEARCH, "--max-vram", "2GB", "--model", "builtin:sd3"], ["unknown built-in model"]),
    ([*SEARCH, "--max-vram", "2GB", "--exclude", "dtype=fp64"], ["dtype takes one of"]),
    ([*SEARCH, "--max-vram", "2GB", "--trials", "0"], ["--trials must be 1 or more"]),
    ([*SEARCH, "--max-vram", "2GB", "--timeout", "-5"], ["--timeout must be more than 0"]),
    (["search", "--max-vram", "2GB", "--device", "tpu"], ["--device must be one of"]),
    ([*SEARCH[:-4], "--max-vram", "2GB", "--out", "p.txt"], ["must end in .yaml or .yml"]),
    ([*SEARCH[:-4], "--max-vram", "2GB", "--out", "file/p.yaml"], ["not a writable folder"]),
    (["plan", "--max-vram", "8"], ["got '8'"]),
    (["plan", "--top", "0"], ["--top must be 1 or more"]),
    (["plan", "--device", "tpu"], ["--device must be one of cuda, cpu or auto, got 'tpu'"]),
    (["knobs", "--device", "tpu"], ["--device must be one of cuda, cpu or auto, got 'tpu'"]),
    (["show", "missing.yaml"], ["'missing.yaml' does not exist"]),
    (["show", "bad.yaml"], ["not valid YAML at line"]),
    (["diff", "good.yaml", "missing.yaml"], ["'missing.yaml' does not exist"]),
    (["diff", "bad.yaml", "good.yaml"], ["not valid YAML"]),
    (["profiles", "nowhere"], ["profile folder 'nowhere' does not exist", "$AUTOTUNE_PROFILE_DIR"]),
    (["profiles", "file"], ["profile folder 'file' is not a folder"]),
    (["apply", "good.yaml", "--out", "missing-dir/deeper/x.png"],
     ["folder 'missing-dir/deeper' does not exist", "mkdir -p missing-dir/deeper"]),
    (["apply", "good.yaml", "--out", "x.jpg"], ["--out must end in .png"]),
    (["apply", "good.yaml", "--out", "file/x.png"], ["not a writable folder"]),
    (["apply", "missing.yaml"], ["'missing.yaml' does not exist"]),
    (["apply", "bad.yaml", "--out", "x.png"], ["not valid YAML"]),
]


@pytest.mark.parametrize("args, fragments", PARSER_ERRORS + VALUE_ERRORS,
                         ids=[" ".join(a) or "(nothing)" for a, _ in PARSER_ERRORS + VALUE_ERRORS])
def test_usage_error_is_one_line_and_writes_nothing(workdir, capsys, args, fragments):
    before = listing(workdir)
    run = cli(capsys, *args)
    run.one_line_error(*fragments)
    assert run.out == ""
    assert listing(workdir) == before


def test_search_on_cuda_without_a_gpu_says_use_cpu(workdir, capsys, monkeypatch):
    from autotune import hardware

    monkeypatch.setattr(hardware, "probe_gpus", lambda: [])
    cli(capsys, *SEARCH[:2], "cuda", *SEARCH[3:], "--max-vram", "2GB").one_line_error(
        "no CUDA GPU is visible", "--device cpu")
    assert listing(workdir) == ["bad.yaml", "file", "good.yaml"]


def test_resume_with_nothing_to_resume(workdir, capsys):
    cli(capsys, *SEARCH, "--max-vram", "2GB", "--resume").one_line_error("nothing to resume")
    assert not (workdir / "p.yaml").exists()


def test_abbreviations_are_refused_everywhere():
    """allow_abbrev=False on every parser, not only on the ones tested above."""
    from autotune.cli.main import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "search" in a.choices).choices
    assert parser.allow_abbrev is False
    assert all(p.allow_abbrev is False for p in subparsers.values())


def test_debug_shows_the_traceback(workdir, capsys):
    from autotune.errors import ProfileError

    with pytest.raises(ProfileError):
        cli(capsys, "--debug", "show", "missing.yaml")
    with pytest.raises(ProfileError):
        cli(capsys, "show", "missing.yaml", "--debug")


def test_help_and_version_exit_zero(capsys):
    run = cli(capsys, "search", "--help")
    assert run.code == 0 and run.out.startswith("usage: autotune search")
    run = cli(capsys, "--version")
    assert run.code == 0 and run.out.strip() == f"autotune {__import__('autotune').__version__}"


@pytest.mark.parametrize("command", ["search", "plan"])
def test_help_names_every_built_in_model(command, capsys):
    from autotune.cli.main import main
    from autotune.models.builtins import builtin_names

    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert " | ".join(builtin_names()) in text
