"""`autotune knobs`: every technique, and whether it can run here (and if not, why)."""
from __future__ import annotations

import argparse
from typing import Any

from autotune.cli.defaults import MODEL_DEFAULT_HELP, add_device_argument, default_model, resolve_device
from autotune.cli.format import print_json, table


def add_parser(sub: Any) -> None:
    p = sub.add_parser("knobs", help="list every knob value and whether it can run here, with the reason",
                       description="List the knob registry for a model and device: each value is "
                                   "searched, unavailable (cannot run here) or excluded (could run, "
                                   "left out by default), with the reason.")
    p.add_argument("--model", help=f"model whose components decide availability (default: {MODEL_DEFAULT_HELP})")
    add_device_argument(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autotune import knobs
    from autotune.knobs.probe import model_context
    from autotune.models.pipelines import model_info
    from autotune.knobs.space import SearchSpace

    device = resolve_device(args.device)
    model = args.model or default_model(device)
    space = SearchSpace(model_context(model, device, model_info(model)))
    if args.json:
        print_json([{"knob": s.knob, "value": s.value, "state": s.state, "reason": s.reason,
                     "stage": knobs.get(s.knob).stage.name.lower(),
                     "lossy": knobs.get(s.knob).is_lossy(s.value),
                     "judged_on_image": knobs.get(s.knob).is_judged_end_to_end(s.value)} for s in space.statuses])
        return 0
    print(f"knobs for {model} on {device}\n")
    rows = []
    for s in space.statuses:
        knob = knobs.get(s.knob)
        rows.append((s.knob, s.value, knob.stage.name.lower(), _numerics(knob, s.value), s.state, s.reason or ""))
    print(table(["knob", "value", "stage", "numerics", "state", "reason"], rows))
    print("\nlossy: judged per call against the reference; lossy (image): on the final image, where one call "
          "cannot show the error")
    return 0


def _numerics(knob: Any, value: Any) -> str:
    if knob.is_judged_end_to_end(value):
        return "lossy (image)"
    return "lossy" if knob.is_lossy(value) else "exact"
