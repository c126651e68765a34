"""Weight sizes as each placement sees them: whole model, largest leaf, offload groups, fp8 storage.

Mirrors how diffusers groups modules (hooks/group_offloading.py): block level groups the items of
each top-level ModuleList/Sequential, every other top-level child is one "unmatched" group that
stays on the device for the whole forward; leaf level makes a group of each leaf module.
Layerwise casting (hooks/layerwise_casting.py) stores the weights of Linear/Conv/Embedding layers
whose qualified name matches no skip pattern in the storage dtype.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import torch

FP8_BYTES = 1


def _own_bytes(module: torch.nn.Module, size: Callable[[str, torch.Tensor], int], prefix: str) -> int:
    return sum(size(f"{prefix}{n}", t) for n, t in [*module.named_parameters(recurse=False),
                                                   *module.named_buffers(recurse=False)])


@dataclasses.dataclass(frozen=True)
class WeightStats:
    total: int
    largest_leaf: int
    #: Bytes of parameters owned by modules that have children (onloaded with their parent).
    non_leaf: int
    block_unmatched: int
    largest_block: int
    largest_fp8_layer_upcast: int  # the one layer upcast to the compute dtype at a time


def fp8_cast_layers(module: torch.nn.Module) -> set[str]:
    """Qualified names of the layers `enable_layerwise_casting` stores in fp8."""
    from diffusers.hooks.layerwise_casting import _GO_LC_SUPPORTED_PYTORCH_LAYERS, DEFAULT_SKIP_MODULES_PATTERN

    patterns = [*DEFAULT_SKIP_MODULES_PATTERN, *(getattr(module, "_skip_layerwise_casting_patterns", None) or [])]
    return {name for name, sub in module.named_modules()
            if name and isinstance(sub, _GO_LC_SUPPORTED_PYTORCH_LAYERS)
            and not any(re.search(p, name) for p in patterns)}


def weight_stats(module: torch.nn.Module, blocks_per_group: int = 1, fp8: bool = False) -> WeightStats:
    cast = fp8_cast_layers(module) if fp8 else set()
    cast_params = {f"{layer}.{n}" for layer in cast
                   for n, _ in module.get_submodule(layer).named_parameters(recurse=False)}

    def size(name: str, tensor: torch.Tensor) -> int:
        return tensor.numel() * (FP8_BYTES if name in cast_params else tensor.element_size())

    total = largest_leaf = non_leaf = 0
    for name, sub in module.named_modules():
        own = _own_bytes(sub, size, f"{name}." if name else "")
        total += own
        if any(True for _ in sub.children()):
            non_leaf += own
        else:
            largest_leaf = max(largest_leaf, own)

    def subtree(sub: torch.nn.Module, prefix: str) -> int:
        return sum(_own_bytes(m, size, f"{prefix}{n}." if n else prefix) for n, m in sub.named_modules())

    unmatched = _own_bytes(module, size, "")
    largest_block = 0
    for name, child in module.named_children():
        if isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)):
            items = list(child.named_children())
            for i in range(0, len(items), blocks_per_group):
                group = sum(subtree(m, f"{name}.{n}.") for n, m in items[i:i + blocks_per_group])
                largest_block = max(largest_block, group)
        else:
            unmatched += subtree(child, f"{name}.")
    upcast = max((sum(p.numel() * p.element_size() for p in module.get_submodule(layer).parameters(recurse=False))
                  for layer in cast), default=0)
    return WeightStats(total, largest_leaf, non_leaf, unmatched, largest_block, upcast)
