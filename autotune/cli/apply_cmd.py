"""`autotune apply PROFILE`: build the profile's pipeline, apply it, generate, write PNG(s)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("apply", help="generate images with a profile applied, write PNG",
                       description="Load the pipeline a profile was tuned for, apply the profile and "
                                   "generate at its size, batch and steps. Same code path as "
                                   "load_pipeline() + apply_profile() in Python.")
    p.add_argument("profile", help="path to a profile YAML")
    p.add_argument("--out", type=Path, default=Path("autotune.png"), help="output PNG in an existing folder (batch > 1 adds -1, -2...; default: autotune.png)")
    p.add_argument("--prompt", help="prompt (default: the one the profile was measured with)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    p.add_argument("--device", help="override the profile's device (cuda, cpu)")
    p.add_argument("--max-vram", help="a lower ceiling, e.g. 6GB (GiB): apply the fastest of the profile's "
                                      "best and stored alternatives whose measured peak fits it, no new search")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autotune.profiles.apply import apply_profile, load_pipeline, require_device
    from autotune.profiles.entries import choose_entry
    from autotune.cli.format import check_output_path
    from autotune.profiles.profile import Profile
    from autotune.units import parse_size

    check_output_path(args.out, (".png",), "--out", create_parents=False)
    max_vram = parse_size(args.max_vram) if args.max_vram is not None else None
    profile = Profile.load(args.profile)
    if max_vram is not None:
        choose_entry(profile, max_vram)  # a ceiling no entry fits is refused before the load
    require_device(args.device or profile.target.device)  # before a load that can take a minute
    import torch  # after the checks above: a wrong path is answered without the 2 s import

    pipe = load_pipeline(profile, max_vram=max_vram)  # in the chosen entry's dtype
    handle = apply_profile(pipe, args.profile, device=args.device, max_vram=max_vram)  # the handle names the file
    t = profile.target
    images = pipe(prompt=args.prompt or t.prompt, height=t.height, width=t.width,
                  num_images_per_prompt=t.batch, num_inference_steps=t.steps,
                  generator=torch.Generator("cpu").manual_seed(args.seed)).images
    paths = [args.out] if len(images) == 1 else [
        args.out.with_name(f"{args.out.stem}-{i + 1}{args.out.suffix}") for i in range(len(images))]
    for image, path in zip(images, paths):
        image.save(path)
    print(handle)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
