"""`autotune probe`: the GPUs autotune would measure on."""
from __future__ import annotations

import argparse
from typing import Any

from autotune.cli.format import print_json, size, table


def add_parser(sub: Any) -> None:
    p = sub.add_parser("probe", help="list GPUs (NVML, torch fallback) with memory, driver, capability",
                       description="List the GPUs this machine has. Exits 0 without a GPU.")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from autotune import hardware

    gpus = hardware.probe_gpus()
    if args.json:
        print_json({"gpus": [dataclasses.asdict(g) for g in gpus], "cpu": hardware.cpu_name(),
                    "ram_bytes": hardware.total_ram_bytes(), "versions": hardware.versions()})
        return 0
    if not gpus:
        print(f"no GPU found; autotune will measure on CPU ({hardware.cpu_name()}, "
              f"{size(hardware.total_ram_bytes())} RAM): memory numbers are then RAM, not VRAM")
        return 0
    rows = [(g.index, g.name, size(g.total_bytes), size(g.free_bytes), g.compute_capability, g.driver, g.source)
            for g in gpus]
    print(table(["gpu", "name", "total", "free", "capability", "driver", "via"], rows))
    return 0
