"""`autotune` entry point: subcommands, and the one place errors become one-line messages."""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from autotune.errors import AutotuneError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_NEGATIVE_NUMBER = re.compile(r"^-[0-9.]")


class OneLineParser(argparse.ArgumentParser):
    """One-line usage errors that point to this (sub)command's --help; no abbreviated flags; a
    mistyped flag is named with the closest real one, before any other complaint it causes
    (a typo of a required flag would otherwise read as "--max-vram is required")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self._seen: list[str] = []
        #: The other subcommands, to say where a flag belongs (`--trials` is a flag of search).
        self.siblings: dict[str, argparse.ArgumentParser] = {}

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self._seen = list(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args(self._seen, namespace)
        if extras and not self._subcommands():  # a leaf parser: nothing is left for anyone else
            self.error(self._unexpected(extras))
        return namespace, extras

    def _unexpected(self, extras: list[str]) -> str:
        """'unexpected argument GB; did you mean --max-vram 8GB?' for a value typed with a space."""
        message = f"unexpected argument{'s' if len(extras) > 1 else ''} {' '.join(extras)}"
        at = self._seen.index(extras[0]) if extras[0] in self._seen else -1
        before = self._seen[max(at - 2, 0):at] if at > 0 else []
        if re.fullmatch(r"(?i)[kmgt]i?b?|b", extras[0]) and before:  # a size unit
            if re.fullmatch(r"--[\w-]+=[0-9.]+", before[-1]):
                message += f"; did you mean {before[-1]}{extras[0]}?"
            elif len(before) == 2 and before[0].startswith("--") and re.fullmatch(r"[0-9.]+", before[1]):
                message += f"; did you mean {before[0]} {before[1]}{extras[0]}?"
        return message

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        message = self._unknown_word() or self._spaced_unit() or message
        self.exit(EXIT_USAGE, f"autotune: error: {message} (see `{self.prog} --help`)\n")

    def _spaced_unit(self) -> str | None:
        """'unexpected argument GB; did you mean --max-vram 8GB?' also when the size flag, read as
        it is parsed (target_args.SizeAction), already refused the bare number before it."""
        for token in self._seen:
            if re.fullmatch(r"(?i)[kmgt]i?b?|b", token):
                message = self._unexpected([token])
                if "did you mean" in message:
                    return message
        return None

    def _subcommands(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    def _unknown_word(self) -> str | None:
        """'unknown flag --max-vrma; did you mean --max-vram?' for the first flag this parser
        does not know (up to its subcommand, which checks its own), or an unknown command."""
        commands = self._subcommands()
        flags = sorted(s for s in self._option_string_actions if s.startswith("--"))
        for token in self._seen:
            if token == "--":
                return None
            if token in commands:
                return None
            if token.startswith("-") and not _NEGATIVE_NUMBER.match(token):
                name = token.split("=", 1)[0]
                if name not in self._option_string_actions:
                    return f"unknown flag {name}{self._owner(name) or _did_you_mean(name, flags)}"
            elif commands:
                return f"unknown command {token!r}{_did_you_mean(token, sorted(commands))}"
        return None


    def _owner(self, flag: str) -> str:
        owners = [name for name, p in self.siblings.items() if flag in p._option_string_actions]
        return f"; it is a flag of {' and '.join(f'`autotune {o}`' for o in owners)}" if owners else ""


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    prefixed = [k for k in known if k.startswith(word)] if len(word) > 3 else []
    close = prefixed or difflib.get_close_matches(word, known, n=1, cutoff=0.7)
    return f"; did you mean {close[0]}?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    from autotune import __version__
    from autotune.cli import (apply_cmd, diff_cmd, env_cmd, export_cmd, knobs_cmd, plan_cmd, probe_cmd,
                              profiles_cmd, report_cmd, search_cmd, show_cmd, warmup_cmd)

    parser = OneLineParser(
        prog="autotune",
        description="Find the fastest memory/speed settings for a diffusers pipeline under a VRAM "
                    "ceiling, by measuring them. Typical flow: `autotune probe`, `autotune search "
                    "--max-vram 8GB --out my.yaml`, then apply_profile(pipe, 'my.yaml') in your code.",
    )
    parser.add_argument("--version", action="version", version=f"autotune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser,
                                metavar="COMMAND")
    for module in (search_cmd, plan_cmd, apply_cmd, warmup_cmd, show_cmd, profiles_cmd, diff_cmd,
                   report_cmd, export_cmd, probe_cmd, knobs_cmd, env_cmd):
        module.add_parser(sub)
    for command in sub.choices.values():  # also accepted after the command; SUPPRESS keeps a
        # value given before it
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks instead of one-line errors")
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log progress details to stderr")
        if isinstance(command, OneLineParser):
            command.siblings = {name: p for name, p in sub.choices.items() if p is not command}
    return parser


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """`--max-vram -1GB` would read as a flag; join it to `--max-vram=-1GB` so validation says why."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_NUMBER.match(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    raw = _join_negative_values(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(raw)
    except SystemExit as exc:  # --help, --version and usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    # A deprecation inside diffusers' own hub calls, not actionable by our users.
    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
    if not args.verbose:  # transformers' import-time notices (torchvision missing...) are not ours
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except AutotuneError as exc:
        if args.debug:
            raise
        print(f"autotune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `autotune show p.yaml | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("autotune: interrupted; finished trials are saved, continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
