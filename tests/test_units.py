"""Memory sizes as typed on the command line: '8GB' is 8 GiB, a bare number is refused."""
from __future__ import annotations

import pytest

from autotune.errors import AutotuneError, InvalidTargetError
from autotune.units import format_size, parse_size, size_arg, size_bytes

GiB = 2**30
MiB = 2**20
KiB = 2**10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8GB", 8 * GiB),
        ("8GiB", 8 * GiB),
        ("7.5GiB", int(7.5 * GiB)),
        ("7.5GB", int(7.5 * GiB)),
        ("512MB", 512 * MiB),
        ("512MiB", 512 * MiB),
        ("64KB", 64 * KiB),
        ("1TB", 2**40),
        ("8000000000B", 8_000_000_000),
        ("8gb", 8 * GiB),
        ("7.5gib", int(7.5 * GiB)),
        ("512mb", 512 * MiB),
        ("8 GB", 8 * GiB),
        ("  8GB  ", 8 * GiB),
    ],
)
def test_parse_size_accepts_sizes_with_units(text, expected):
    assert parse_size(text) == expected
    assert isinstance(parse_size(text), int)


def test_gb_means_binary_gigabytes():
    # "a card sold as 8 GB" is 8 GiB, not 8 * 10**9.
    assert parse_size("8GB") == 8 * 2**30 == 8589934592
    assert parse_size("8GB") != 8 * 10**9


@pytest.mark.parametrize("text", ["8", "-1GB", "0GB", "abc", "", "GB", "8XB", "0.0GiB", "8 G B", "1e3GB"])
def test_parse_size_rejects(text):
    with pytest.raises(InvalidTargetError):
        parse_size(text)


def test_parse_size_error_is_an_autotune_error_naming_the_flag_and_an_example():
    with pytest.raises(AutotuneError) as info:
        parse_size("8")
    message = str(info.value)
    assert "--max-vram" in message
    assert "8GB" in message
    assert "'8'" in message


def test_parse_size_zero_says_larger_than_zero():
    with pytest.raises(InvalidTargetError, match="larger than zero"):
        parse_size("0GB")


def test_parse_size_what_names_the_option():
    with pytest.raises(InvalidTargetError, match="--budget"):
        parse_size("12", what="--budget")


@pytest.mark.parametrize(
    ("num_bytes", "expected"),
    [
        (None, "-"),
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (int(1.5 * MiB), "1.50 MiB"),
        (8 * GiB, "8.00 GiB"),
        (int(2.03 * GiB), "2.03 GiB"),
        (2**40, "1.00 TiB"),
        (3 * 2**40, "3.00 TiB"),
    ],
)
def test_format_size(num_bytes, expected):
    assert format_size(num_bytes) == expected


@pytest.mark.parametrize("num_bytes", [512, 4 * KiB, 256 * MiB, 8 * GiB, 24 * GiB, 2**40])
def test_format_size_output_parses_back(num_bytes):
    assert parse_size(format_size(num_bytes)) == num_bytes


@pytest.mark.parametrize(("value", "expected"), [("6GB", 6 * GiB), (6 * GiB, 6 * GiB), ("4.5MiB", int(4.5 * MiB))])
def test_a_ceiling_is_text_with_a_unit_or_bytes(value, expected):
    assert size_bytes(value) == expected


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "6", None])
def test_a_ceiling_that_is_not_a_size_is_refused_naming_it(value):
    with pytest.raises(InvalidTargetError, match="max_vram"):
        size_bytes(value)


@pytest.mark.parametrize(("num_bytes", "expected"), [(6 * GiB, "6GB"), (int(3.35 * MiB), "3.35MB"), (100, "100B")])
def test_size_arg_is_what_max_vram_takes_back(num_bytes, expected):
    assert size_arg(num_bytes) == expected
    assert parse_size(expected) == pytest.approx(num_bytes, rel=0.01)
