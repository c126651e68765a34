"""The CLI in this process (exit code, stdout, stderr) and what a command left on disk."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str

    def one_line_error(self, *fragments: str) -> str:
        """The single error line, after checking exit code 2, one line, no traceback."""
        assert self.code == 2, (self.code, self.err)
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("autotune: error: ") and "Traceback" not in self.err
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
        return lines[0]


def cli(capsys, *args: object) -> Run:
    """`autotune ARGS` in this process: exit code, stdout, stderr."""
    from autotune.cli.main import main

    capsys.readouterr()
    environ = dict(os.environ)  # main() may set defaults (TRANSFORMERS_VERBOSITY): keep them here
    try:
        code = main([str(a) for a in args])
    finally:
        os.environ.clear()
        os.environ.update(environ)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def listing(folder: Path) -> list[str]:
    """Every path under `folder`, to show a command wrote nothing."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
