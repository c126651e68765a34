"""The target flags `search` and `plan` share, and the one place they become a `Target`."""
from __future__ import annotations

import argparse
from typing import Any


def add_target_arguments(p: argparse.ArgumentParser, *, model_default_help: str) -> None:
    p.add_argument("--model", help="builtin:tiny-sd | builtin:sd15 | builtin:sdxl, a hub id or a diffusers "
                                   f"folder (default: {model_default_help})")
    p.add_argument("--height", type=int, help="image height in pixels, a multiple of 8 (default: the model's native size)")
    p.add_argument("--width", type=int, help="image width in pixels, a multiple of 8 (default: the model's native size)")
    p.add_argument("--batch", type=int, default=1, help="images per prompt (default: 1)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps per image (default: 20)")
    p.add_argument("--max-vram", required=True, help="memory ceiling, e.g. 8GB, 7.5GiB, 512MB (required)")
    p.add_argument("--include", action="append", default=[], metavar="KNOB[=VALUE]",
                   help="search a value left out by default (e.g. --include compile)")
    p.add_argument("--exclude", action="append", default=[], metavar="KNOB[=VALUE]",
                   help="do not search this knob or value (e.g. --exclude dtype=fp16)")


def target_from_args(args: argparse.Namespace, device: str, default_model: str) -> Any:
    """A validated Target; sizes left out take the model's native size (0 is an error, not "unset")."""
    from autotune.pipelines import model_info
    from autotune.target import Target
    from autotune.units import parse_size

    max_vram = parse_size(args.max_vram)
    model = args.model or default_model
    info = model_info(model)
    return Target(model=model, height=info.native_height if args.height is None else args.height,
                  width=info.native_width if args.width is None else args.width,
                  batch=args.batch, steps=args.steps, max_vram=max_vram, device=device,
                  pipeline_class=info.pipeline_class)
