"""The target flags `search` and `plan` share, and the one place they become a `Target`."""
from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.target import Scalar, Target


class SizeAction(argparse.Action):
    """A size flag (`--max-vram 8GB`) read into bytes as it is parsed: the one reading of it, and
    a wrong size is a usage error before anything slower runs."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        from autotune.errors import InvalidTargetError
        from autotune.units import parse_size

        try:
            setattr(namespace, self.dest, parse_size(str(values), what=option_string or self.dest))
        except InvalidTargetError as exc:
            parser.error(str(exc))


def add_target_arguments(p: argparse.ArgumentParser, *, model_default_help: str,
                         ceiling_required: bool = True) -> None:
    """Add the target flags. With `ceiling_required=False` (`autotune plan`), `--max-vram` may be
    left out: `target_from_args` then uses the ceiling its caller passes, or none at all."""
    from autotune.models.builtins import builtin_names

    p.add_argument("--model", help=f"{' | '.join(builtin_names())}, a hub id or a diffusers "
                                   f"folder (default: {model_default_help})")
    p.add_argument("--height", type=int, help="image height in pixels, a multiple of 8 (default: the model's native size)")
    p.add_argument("--width", type=int, help="image width in pixels, a multiple of 8 (default: the model's native size)")
    p.add_argument("--batch", type=int, default=1, help="images (or videos) per prompt (default: 1)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps per image (default: 20)")
    p.add_argument("--frames", type=int, help="frames per video, for video pipelines (default: the pipeline's own)")
    p.add_argument("--call-arg", dest="call_args", action="append", default=[], metavar="KEY=VALUE",
                   help="another argument of the pipeline call, repeatable; values read as YAML scalars "
                        "(e.g. --call-arg strength=0.6 --call-arg use_resolution_binning=false)")
    if ceiling_required:
        p.add_argument("--max-vram", required=True, action=SizeAction,
                       help="memory ceiling, e.g. 8GB, 7.5GiB, 512MB (required)")
    else:
        p.add_argument("--max-vram", action=SizeAction, help="memory ceiling, e.g. 8GB, 7.5GiB, 512MB (default: none)")
    p.add_argument("--max-ram", action=SizeAction,
                   help="host RAM ceiling, e.g. 32GB: a trial whose resident set peaks above it (less autotune's "
                        "own pristine copy of the weights) is infeasible; the planner prunes what surely needs "
                        "more (default: none)")
    p.add_argument("--include", action="append", default=[], metavar="KNOB[=VALUE]",
                   help="search a value left out by default (e.g. --include compile)")
    p.add_argument("--exclude", action="append", default=[], metavar="KNOB[=VALUE]",
                   help="do not search this knob or value (e.g. --exclude dtype=fp16)")


def parse_call_args(items: list[str]) -> dict[str, Scalar]:
    """['strength=0.6', 'use_resolution_binning=false'] -> {'strength': 0.6, 'use_resolution_binning': False}.
    Values parse like YAML scalars (25, 0.6, true, null); anything else stays text."""
    import yaml

    from autotune.errors import InvalidTargetError

    parsed: dict[str, Scalar] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidTargetError(f"--call-arg must look like KEY=VALUE (e.g. strength=0.6), got {item!r}")
        if key in parsed:
            raise InvalidTargetError(f"--call-arg {key} is given twice; keep one")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dt.date, dt.datetime)):
            value = raw.strip()
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise InvalidTargetError(
                f"--call-arg {key} takes a number, true/false, null or text, got {raw!r}"
            )
        parsed[key] = value
    return parsed


def target_from_args(args: argparse.Namespace, device: str, default_model: str, *,
                     max_vram: int | None = None) -> Target:
    """A validated Target; sizes left out take the model's native size (0 is an error, not "unset").

    The ceiling is `--max-vram` when given (bytes, as `SizeAction` parsed it; text is read too), else `max_vram` from the caller (e.g. the device's
    memory), else `target.NO_CEILING` ("no ceiling", possible only when the parser was built with
    `ceiling_required=False`; check `target.has_ceiling`). `--call-arg`s and `--frames` are checked
    against the pipeline class's `__call__` here, before anything slow runs.
    """
    from autotune.models.call import check_call_args, pipeline_class
    from autotune.errors import InvalidTargetError
    from autotune.models.pipelines import model_info
    from autotune.target import NO_CEILING, Target
    from autotune.units import size_bytes

    if args.max_vram is not None:
        max_vram = size_bytes(args.max_vram, what="--max-vram")
    call_args = parse_call_args(getattr(args, "call_args", None) or [])
    if args.model is not None and not args.model.strip():
        raise InvalidTargetError("--model is empty; give builtin:tiny-sd, a hub id or a diffusers folder, "
                                 "or leave --model out for the default")
    model = args.model or default_model
    info = model_info(model)
    target = Target(model=model, height=info.native_height if args.height is None else args.height,
                    width=info.native_width if args.width is None else args.width,
                    batch=args.batch, steps=args.steps, max_vram=NO_CEILING if max_vram is None else max_vram,
                    device=device, pipeline_class=info.pipeline_class,
                    frames=getattr(args, "frames", None), call_args=call_args,
                    max_ram=size_bytes(args.max_ram, what="--max-ram") if getattr(args, "max_ram", None) is not None else None)
    cls = pipeline_class(info.pipeline_class)
    if cls is not None:
        check_call_args(cls, target)
    return target
