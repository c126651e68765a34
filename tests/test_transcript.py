"""tests/helpers/transcript.py: a README transcript is compared by structure, so it fails when the
README is stale (a renamed label, a new column, a removed line) and not when a run's numbers,
settings, trial count or confirmation differ."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import transcript
from helpers.transcript import TranscriptError, differences, mask, parse

README = Path(__file__).resolve().parents[1] / "README.md"
COMMAND = "autotune search --max-vram 2GB --trials 8 --out profiles/example-cpu.yaml"

# A run as the code prints it, differing from the README only by noise: other numbers and
# settings, a path with another stamp, fewer trials, a failed one, a confirmation with the
# speed-up over the defaults, and the wrapping that moves with the numbers.
NOISY_RUN = """\
target: builtin:tiny-sd-shapes 64x64 batch 1, 20 steps, ceiling 2.00 GiB (2147483648 bytes) on cpu
space: 96 valid combinations of dtype, layerwise_fp8, channels_last, attention, vae_slicing,
  vae_tiling
  not searched: fuse_qkv=True: fused projections pay off with torch.compile on CUDA; add --includ...
  not searched: compile=full: cold torch.compile takes ~50 s per trial on CPU; add --include comp...
trial logs: .autotune/logs/builtin-tiny-sd-shapes-64x64-b1-0123abcd-20261203T101010000001/
note: on CPU, memory is the peak of live tensors in RAM, not VRAM
trial  outcome         latency      ±       peak  predicted   psnr  settings
    0  feasible        0.338 s   1.2%  11.23 MiB  11.16 MiB    100  defaults
    3  feasible        0.313 s   1.9%  11.23 MiB  11.16 MiB    100  channels_last=True
    4  failed                -      -          -          -      -  worker died (traceback in the trial log)
   12  feasible       12.109 s      -   5.62 MiB   5.58 MiB     51  dtype=bf16 attention=sliced vae_til...
WARNING autotune.search.study: the winner was not confirmed: something worth a warning
winner     defaults
           0.338 s ±1.2% median of 9 runs, peak 11.23 MiB (cpu_live_tensor_peak)
quality    PSNR 100.0 dB, SSIM 1.0000, denoiser 100.0 dB and VAE decode 100.0 dB SQNR per
           call (lossy floor 20 dB SQNR per call) against the fp32 reference (every knob at its
           exact default, without the memory ceiling)
runner-up  channels_last=True
           +1.3% vs the winner over 18 interleaved rounds in 3 sessions (p=0.500, not
           significant); decided by latency (not significant)
defaults   1.00x the winner's latency, measured side by side (95% interval 0.98-1.02x)
alternatives  1 faster-or-smaller trade-offs kept in the profile
measured   4 trials in 182 s: 3 feasible, 0 over the ceiling, 0 below the quality floor, 0 out
           of memory, 1 failed
stopped by the requested number of trials was measured
profile written to profiles/example-cpu.yaml  (show it: autotune show profiles/example-cpu.yaml)
"""


@pytest.fixture
def documented() -> str:
    return transcript.readme_block(README.read_text(), COMMAND)


def run(text: str) -> transcript.Structure:
    return parse(transcript.without_log_records(text))


def test_numbers_paths_and_settings_are_masked():
    assert mask("0.350 s ±1.7% median of 17 runs, peak 11.23 MiB (x)") == "#s #% median of # runs, peak #MiB (x)"
    assert mask("dtype=fp16 attention=sliced v... on builtin:tiny-sd 128x128") == "<settings> on builtin:tiny-sd #x#"
    assert mask("written to profiles/a.yaml  (show it: autotune show profiles/a.yaml)") == (
        "written to <path> (show it: autotune show <path>)")
    assert mask("layerwise_fp8, fp32 reference") == "layerwise_fp8, fp32 reference"


def test_the_readme_transcript_parses_into_its_parts(documented):
    s = parse(documented)
    assert [line.label for line in s.header] == ["target:", "space:", "not searched:", "trial logs:", "note:"]
    assert s.columns == ("trial", "outcome", "latency", "±", "peak", "predicted", "psnr", "settings")
    assert len(s.trials) >= 1
    labels = [line.label for line in s.summary]
    for label in ("winner", "quality", "runner-up", "alternatives", "measured", "stopped by", "profile written to"):
        assert label in labels


def test_noise_is_not_a_difference(documented):
    assert differences(parse(documented), run(NOISY_RUN)) == []


def test_a_winner_without_an_interval_is_no_difference(documented):
    # 2026-12-02 at load 14: the winner raced at its minimum runs, so no ±
    raced = NOISY_RUN.replace("0.338 s ±1.2% median of 9 runs", "12.140 s median of 3 runs")
    assert "12.140 s median of 3 runs, peak" in raced and "±1.2%" not in raced
    assert differences(parse(documented), run(raced)) == []


def test_without_the_optional_confirmation_line_is_no_difference(documented):
    quiet = "\n".join(line for line in NOISY_RUN.splitlines() if not line.startswith("defaults "))
    assert differences(parse(documented), run(quiet)) == []


@pytest.mark.parametrize("stale, found", [
    (("runner-up  ", "second     "), "summary lines differ"),                       # a renamed label
    (("peak  predicted", "peak  rss  predicted"), "columns differ"),                # a new column
    (("stopped by the requested", "halted by the requested"), "summary lines differ"),
    (("alternatives  2 faster-or-smaller", "alternatives  2 quicker-or-smaller"), "summary lines differ"),
    ((" s: 8 feasible, 0 over", " s: 8 ok, 0 over"), "summary lines differ"),
    (("trial logs: ", "logs: "), "header lines differ"),
])
def test_a_stale_readme_is_a_difference(documented, stale, found):
    old, new = stale
    assert old in documented
    problems = differences(parse(documented.replace(old, new, 1)), run(NOISY_RUN))
    assert problems and any(found in p for p in problems), problems


@pytest.mark.parametrize("removed", ["alternatives", "quality", "note:", "trial logs:", "measured"])
def test_a_removed_line_is_a_difference(documented, removed):
    lines = documented.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(removed))
    end = first + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1  # its continuation lines go with it
    assert differences(parse("\n".join(lines[:first] + lines[end:])), run(NOISY_RUN))


def test_a_line_the_readme_lacks_is_a_difference(documented):
    extra = NOISY_RUN.replace("stopped by", "reused     2 trial(s) measured by earlier searches\nstopped by")
    assert differences(parse(documented), run(extra))


def test_a_trial_line_short_of_a_column_is_a_difference(documented):
    short = re.sub(r"MiB +100  defaults", "MiB  defaults", documented, count=1)  # the psnr column gone
    assert short != documented
    assert any("does not have the 8 columns" in p for p in differences(parse(short), run(NOISY_RUN)))


def test_a_text_without_a_trial_table_is_refused():
    with pytest.raises(TranscriptError, match="no trial table"):
        parse("winner     defaults\n")
    with pytest.raises(TranscriptError, match="no console block"):
        transcript.readme_block("```console\n$ autotune plan\n```\n", COMMAND)
