"""SearchOptions: one place for the defaults, validated once, errors naming the flag."""
from __future__ import annotations

import dataclasses

import pytest

from autotune.errors import InvalidSearchOptionError, InvalidTargetError
from autotune.search.options import DEFAULT_MIN_PSNR, DEFAULT_MIN_SQNR, SearchOptions


def test_defaults_are_the_documented_ones():
    o = SearchOptions()
    assert (o.trials, o.runs, o.precision, o.time_cap_s, o.trial_timeout_s) == (20, 6, 0.02, 10.0, 600.0)
    assert o.min_psnr == DEFAULT_MIN_PSNR == 30.0 and o.time_budget_s is None and o.amortize is None
    assert o.min_sqnr == DEFAULT_MIN_SQNR == 20.0
    assert o.confirm and o.reuse and o.use_planner and o.reference_dtype == "fp32"


@pytest.mark.parametrize("field, value, flag", [
    ("trials", 0, "--trials"), ("runs", 0, "--runs"), ("precision", 1.5, "--precision"),
    ("precision", 0, "--precision"), ("time_cap_s", 0, "--max-run-time"), ("trial_timeout_s", -1, "--timeout"),
    ("min_psnr", 120, "--min-psnr"), ("min_psnr", -1, "--min-psnr"), ("min_sqnr", 100, "--min-sqnr"),
    ("amortize", 0, "--amortize"),
    ("time_budget_s", 0, "--time-budget"),
])
def test_out_of_range_is_refused_naming_the_flag(field, value, flag):
    with pytest.raises(InvalidSearchOptionError, match=f"^{flag} must be .*got {value:g}$"):
        SearchOptions(**{field: value})


def test_a_bad_option_is_an_invalid_target_for_the_cli():
    with pytest.raises(InvalidTargetError):
        SearchOptions(reference_dtype="fp8")


def test_options_are_frozen_and_replace_validates_again():
    o = SearchOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.runs = 3  # type: ignore[misc]
    assert o.replace(runs=3).runs == 3 and o.runs == 6
    with pytest.raises(InvalidSearchOptionError):
        o.replace(runs=0)


def test_floor_off_and_deadline():
    assert SearchOptions(min_psnr=None).min_psnr is None and SearchOptions(min_sqnr=None).min_sqnr is None
    assert SearchOptions().deadline_s == float("inf") and SearchOptions(time_budget_s=5).deadline_s == 5


def test_the_cli_builds_its_defaults_from_the_options():
    from autotune.cli.main import build_parser

    args = build_parser().parse_args(["search", "--max-vram", "2GB"])
    from autotune.cli.search_cmd import options_from

    assert options_from(args) == SearchOptions()
