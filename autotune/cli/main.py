"""`autotune` entry point: subcommands, and the one place errors become one-line messages."""
from __future__ import annotations

import argparse
import logging
import re
import sys
import warnings
from collections.abc import Sequence

from autotune.errors import AutotuneError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage block on a bad flag; one line naming --help is enough."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"autotune: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from autotune.cli import apply_cmd, knobs_cmd, plan_cmd, probe_cmd, search_cmd, show_cmd

    parser = OneLineParser(
        prog="autotune",
        description="Find the fastest memory/speed settings for a diffusers pipeline under a VRAM "
                    "ceiling, by measuring them. Typical flow: `autotune probe`, `autotune search "
                    "--max-vram 8GB --out my.yaml`, then apply_profile(pipe, 'my.yaml') in your code.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser,
                                metavar="COMMAND")
    for module in (search_cmd, plan_cmd, apply_cmd, show_cmd, probe_cmd, knobs_cmd):
        module.add_parser(sub)
    for command in sub.choices.values():  # also accepted after the command; SUPPRESS keeps a
        # value given before it
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks instead of one-line errors")
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log progress details to stderr")
    return parser


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """`--max-vram -1GB` would read as a flag; join it to `--max-vram=-1GB` so validation says why."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.match(r"^-[0-9.]", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
    # A deprecation inside diffusers' own hub calls, not actionable by our users.
    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
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
