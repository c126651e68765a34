"""The committed weights of the trained built-ins (`builtin:tiny-sd-shapes`): where they live in
the package, the facts written beside them (weights.json: the latents' scaling factor, the
sha256 of each file) and loading them into a freshly built pipeline's components.

Files are checked against their checksums before loading: a truncated checkout or a Git LFS
pointer in their place is refused naming the file, instead of making noise images quietly.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from importlib import resources
from typing import Any

from autotune.errors import ModelNotFoundError

log = logging.getLogger(__name__)

#: Built-in name -> its folder under autotune/model_weights/ (written by scripts/train_tiny_sd_shapes.py).
TRAINED = {"tiny-sd-shapes": "tiny-sd-shapes"}
#: The components whose weights are stored; the others keep the built-in's seeded random init.
COMPONENTS = ("unet", "vae")


class WeightsCorruptError(ModelNotFoundError):
    """A committed weights file is missing or its bytes are not the ones weights.json names."""


def _folder(name: str) -> Any:
    return resources.files("autotune") / "model_weights" / TRAINED[name]


@functools.lru_cache(maxsize=None)
def weights_meta(name: str) -> dict[str, Any]:
    """weights.json of a trained built-in: scaling_factor, sha256 per component, how it was trained."""
    path = _folder(name) / "weights.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsCorruptError(f"cannot read {path} of builtin:{name} ({exc})") from None


def _checked_bytes(name: str, component: str) -> bytes:
    path = _folder(name) / f"{component}.safetensors"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsCorruptError(f"cannot read {path} of builtin:{name} ({exc})") from None
    expected = weights_meta(name)["sha256"][component]
    if hashlib.sha256(data).hexdigest() != expected:
        raise WeightsCorruptError(f"{path} does not match its sha256 in weights.json ({expected[:12]}...); "
                                  "rerun scripts/train_tiny_sd_shapes.py or restore the file")
    return data


def load_trained(name: str, parts: dict[str, Any]) -> None:
    """Load the stored weights into `parts` (the components, built in fp32), in place."""
    from safetensors.torch import load

    for component in COMPONENTS:
        state = load(_checked_bytes(name, component))
        module = parts[component]
        reference = module.state_dict()
        module.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()}, strict=True)
    log.debug("loaded the trained weights of builtin:%s", name)
