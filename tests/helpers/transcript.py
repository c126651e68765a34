"""The structure of an `autotune search` console transcript, numbers masked, so the README's
example can be checked against a fresh run: noise changes numbers, settings and how many trials
print, a stale README changes labels, columns and lines.

A transcript is the header (stderr), the trial table (stderr) and the summary (stdout). Each
labelled line is joined with its indented continuation lines (wrapping moves with the numbers)
and masked: paths, settings (`name=value`, `defaults`, a clipped `...`), sizes like `128x128`
and numbers with their unit.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

#: Header labels, in the order `autotune search` prints them.
HEADER_LABELS = ("target:", "space:", "not searched:", "trial logs:", "note:")
#: Summary labels of more than one word (the others are the line's first word).
MULTI_WORD_LABELS = ("stopped by", "profile written to")
#: Summary lines that a run prints or not depending on what it measured, documented as such in
#: the README: the speed-up over the defaults, only after a confirmation with the defaults as a
#: reference arm.
OPTIONAL_SUMMARY = frozenset({"defaults"})
#: Lines whose text differs with what was measured: compared by label only (the runner-up is a
#: confirmed rival or the reason there was none; which knobs can be searched or not depends on
#: what is installed).
LABEL_ONLY = frozenset({"space:", "not searched:", "runner-up", "defaults"})

#: The precision of a latency in the summary, printed only when the trial's runs gave an interval
#: (a trial raced at its minimum runs has none): dropped before the summary is compared.
_PRECISION = re.compile(r" ±\d+(?:\.\d+)?%")
_PATH = re.compile(r"(?<!\S)[^\s()]*/[^\s()]*")
_SETTING = re.compile(r"(?<!\S)(?:[a-z_][a-z0-9_]*=\S+|defaults|\S+\.\.\.)(?!\S)")
_SETTINGS_RUN = re.compile(r"<settings>(?:\s+<settings>)+")
_DIMENSIONS = re.compile(r"\b\d+x\d+\b")
_NUMBER = re.compile(r"(?<![\w.])[-+±]?\d+(?:\.\d+)?(?:\s?(%|ms|s|[KMGT]iB|B|bytes|dB|x)(?![\w]))?")


def mask(text: str) -> str:
    """`text` with paths, settings, dimensions and numbers (their unit kept) replaced."""
    text = _PATH.sub("<path>", text)
    text = _SETTING.sub("<settings>", text)
    text = _SETTINGS_RUN.sub("<settings>", text)
    text = _DIMENSIONS.sub("#x#", text)
    text = _NUMBER.sub(lambda m: "#" + (m.group(1) or ""), text)
    return " ".join(text.split())


@dataclasses.dataclass(frozen=True)
class Line:
    """One logical line: its label (or kind: `columns`, `trial`) and its masked text."""

    label: str
    text: str

    def shape(self) -> tuple[str, str]:
        """What must match between two transcripts: the label, and the text unless it varies."""
        return (self.label, "" if self.label in LABEL_ONLY else self.text)


@dataclasses.dataclass(frozen=True)
class Structure:
    """A transcript as its header lines, its trial table's columns and trial lines, its summary."""

    header: tuple[Line, ...]
    columns: tuple[str, ...]
    trials: tuple[Line, ...]
    summary: tuple[Line, ...]


class TranscriptError(ValueError):
    """The text is not a search transcript: no trial table."""


def _summary_label(line: str) -> str:
    for label in MULTI_WORD_LABELS:
        if line.startswith(label + " "):
            return label
    return line.split()[0]


def _header_label(line: str) -> str:
    stripped = line.strip()
    return next((label for label in HEADER_LABELS if stripped.startswith(label)), stripped.split()[0])


def _logical(lines: Iterable[str]) -> list[tuple[str, str]]:
    """Lines at column 0 with their indented continuations, as (first line, joined text)."""
    out: list[tuple[str, str]] = []
    for line in lines:
        if not line.strip():
            continue
        if line[0].isspace() and out and not line.lstrip().startswith(HEADER_LABELS):
            first, text = out[-1]
            out[-1] = (first, text + " " + line.strip())
        else:
            out.append((line, line.strip()))
    return out


def _strip_label(label: str, text: str) -> str:
    return text[len(label):] if text.startswith(label) else text


def parse(text: str) -> Structure:
    """The structure of a transcript (a `$ ` command line, if any, is skipped)."""
    lines = [line for line in text.splitlines() if not line.startswith("$ ")]
    start = next((i for i, line in enumerate(lines) if line.split()[:2] == ["trial", "outcome"]), None)
    if start is None:
        raise TranscriptError("no trial table (a line starting 'trial  outcome') in the transcript")
    columns = tuple(lines[start].split())
    end = start + 1
    while end < len(lines) and re.match(r"\s*\d+\s", lines[end]):
        end += 1
    header = tuple(Line(label, mask(_strip_label(label, text.strip())))
                   for first, text in _logical(lines[:start]) for label in [_header_label(first)])
    trials = tuple(Line("trial", mask(line)) for line in lines[start + 1:end])
    summary = tuple(Line(label, mask(_PRECISION.sub("", _strip_label(label, text))))
                    for first, text in _logical(lines[end:]) for label in [_summary_label(first)])
    return Structure(_collapse(header), columns, trials, summary)


def _collapse(lines: tuple[Line, ...]) -> tuple[Line, ...]:
    """Repeated lines of one kind (the knob values not searched) count as one."""
    out: list[Line] = []
    for line in lines:
        if not (out and out[-1].label == line.label and line.label in LABEL_ONLY):
            out.append(line)
    return tuple(out)


def cells(line: Line, columns: int) -> list[str]:
    """A masked trial line's cells: one per column, the settings (or error) last."""
    return line.text.split(None, columns - 1)


def differences(documented: Structure, run: Structure) -> list[str]:
    """How a run's transcript differs from the documented one in structure (empty: the same)."""
    problems = []
    doc_header, run_header = [x.shape() for x in documented.header], [x.shape() for x in run.header]
    if doc_header != run_header:
        problems.append(f"header lines differ: documented {doc_header}, run {run_header}")
    if documented.columns != run.columns:
        problems.append(f"trial table columns differ: documented {documented.columns}, run {run.columns}")
    for name, structure in (("documented", documented), ("run", run)):
        if not structure.trials:
            problems.append(f"the {name} transcript has no trial lines")
        for line in structure.trials:
            if len(cells(line, len(structure.columns))) != len(structure.columns):
                problems.append(f"a {name} trial line does not have the {len(structure.columns)} columns: {line.text}")
    doc_summary = [x.shape() for x in documented.summary if x.label not in OPTIONAL_SUMMARY]
    run_summary = [x.shape() for x in run.summary if x.label not in OPTIONAL_SUMMARY]
    if doc_summary != run_summary:
        problems.append(f"summary lines differ: documented {doc_summary}, run {run_summary}")
    return problems


def readme_block(readme: str, command: str) -> str:
    """The console block of the README that starts with `$ COMMAND`."""
    for block in re.findall(r"```console\n(.*?)```", readme, flags=re.S):
        if block.startswith(f"$ {command}\n"):
            return block
    raise TranscriptError(f"no console block starting with '$ {command}' in the README")


_LOG_RECORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def without_log_records(text: str) -> str:
    """A run's output without logging's records (`WARNING name: ...`): they are printed between
    the transcript's lines when something was worth a warning, and the README shows none."""
    return "\n".join(line for line in text.splitlines() if not _LOG_RECORD.match(line))
