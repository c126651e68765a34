"""Weight sizes as each placement sees them: whole model, largest leaf, offload groups, and
weights a knob stores narrower (a `PlanEffect.storage`, e.g. layerwise fp8 casting).

Mirrors how diffusers groups modules (hooks/group_offloading.py): block level groups the items of
each ModuleList/Sequential of the top level and of every child it recurses into (those named as
block modules, `offload_block_modules`); every other child is in its level's "unmatched" group,
on the device while that level runs; leaf level makes a group of each leaf module.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping

import torch


def _own_bytes(module: torch.nn.Module, size: Callable[[str, torch.Tensor], int], prefix: str,
               seen: set[int] | None = None) -> int:
    """Bytes of the tensors `module` holds itself; with `seen`, each tensor once over a pass: a
    tied weight (T5's `shared` and `encoder.embed_tokens`, two modules holding one Parameter)
    is one tensor in memory."""
    total = 0
    for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
        if seen is not None:
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
        total += size(f"{prefix}{name}", tensor)
    return total


def offload_block_modules(module: torch.nn.Module) -> frozenset[str]:
    """The children block-level group offload recurses into, as the offload knob passes them to
    diffusers: a diffusers model's own `_group_offload_block_modules` (AutoencoderKL's encoder and
    decoder; none for a UNet or a transformer); for any other module, such as a transformers text
    encoder, which diffusers would otherwise move whole (T5-XXL: 9 GiB in bf16, its blocks one
    level down under `encoder`), the names of the children on the way down to its block lists."""
    if hasattr(module, "enable_group_offload"):
        return frozenset(getattr(module, "_group_offload_block_modules", None) or ())
    names: set[str] = set()

    def holds_blocks(parent: torch.nn.Module) -> bool:
        found = False
        for name, child in parent.named_children():
            if isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)):
                found = True
            elif holds_blocks(child):
                names.add(name)
                found = True
        return found

    holds_blocks(module)
    return frozenset(names)


@dataclasses.dataclass(frozen=True)
class WeightStats:
    total: int
    largest_leaf: int
    #: Bytes of parameters owned by modules that have children (onloaded with their parent).
    non_leaf: int
    #: Bytes of the unmatched groups of every level block-level offload recurses into.
    block_unmatched: int
    largest_block: int
    #: The largest layer with narrower-stored weights, upcast to the compute dtype while it runs.
    largest_upcast_layer: int
    #: Bytes of each item of each ModuleList/Sequential block-level offload groups, in order:
    #: what group offload with N blocks per group moves together (`largest_group`).
    block_sizes: tuple[tuple[int, ...], ...] = ()
    #: Bytes of all weights as loaded, before a knob stores some narrower (None: as `total`).
    as_loaded: int | None = None

    @property
    def loaded_bytes(self) -> int:
        """What the weights take when loaded: narrower storage (quantization, fp8 casting) is
        applied to loaded weights, so it cannot lower a peak that loading reaches first."""
        return self.total if self.as_loaded is None else self.as_loaded

    def largest_group(self, blocks_per_group: int) -> int:
        """The largest run of `blocks_per_group` consecutive blocks of one list (diffusers groups
        each list's items in order); `largest_block` where the sizes were not kept."""
        if not self.block_sizes:
            return self.largest_block * blocks_per_group
        return max((sum(sizes[i:i + blocks_per_group]) for sizes in self.block_sizes
                    for i in range(0, len(sizes), blocks_per_group)), default=0)


def weight_stats(module: torch.nn.Module, blocks_per_group: int = 1,
                 storage: Mapping[str, float] | None = None) -> WeightStats:
    """`storage`: {qualified parameter name: bytes per element} of parameters stored narrower
    (fractional where scales and zero points are kept per row or group: quantization)."""
    storage = storage or {}
    cast = {name.rpartition(".")[0] for name in storage}

    def size(name: str, tensor: torch.Tensor) -> int:
        return round(tensor.numel() * storage.get(name, tensor.element_size()))

    # as loaded: every tensor at its own width; parameters() and buffers() yield a tied one once
    loaded = sum(t.numel() * t.element_size() for t in itertools.chain(module.parameters(), module.buffers()))
    total = largest_leaf = non_leaf = 0
    counted: set[int] = set()
    for name, sub in module.named_modules():
        own = _own_bytes(sub, size, f"{name}." if name else "", counted)
        total += own
        if any(True for _ in sub.children()):
            non_leaf += own
        else:
            largest_leaf = max(largest_leaf, own)

    grouped: set[int] = set()  # a tensor tied across groups is counted in the first that holds it

    def subtree(sub: torch.nn.Module, prefix: str) -> int:
        return sum(_own_bytes(m, size, f"{prefix}{n}." if n else prefix, grouped) for n, m in sub.named_modules())

    recurse_into = offload_block_modules(module)
    block_sizes: list[tuple[int, ...]] = []

    def unmatched_bytes(level: torch.nn.Module, prefix: str) -> int:
        """The level's own tensors and unmatched children; its block lists go to block_sizes."""
        unmatched = _own_bytes(level, size, prefix, grouped)
        for name, child in level.named_children():
            if name in recurse_into:  # before the list check, as diffusers does
                unmatched += unmatched_bytes(child, f"{prefix}{name}.")
            elif isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)):
                block_sizes.append(tuple(subtree(m, f"{prefix}{name}.{n}.") for n, m in child.named_children()))
            else:
                unmatched += subtree(child, f"{prefix}{name}.")
        return unmatched

    unmatched = unmatched_bytes(module, "")
    upcast = max((sum(p.numel() * p.element_size() for p in module.get_submodule(layer).parameters(recurse=False))
                  for layer in cast), default=0)
    largest_block = max((sum(sizes[i:i + blocks_per_group]) for sizes in block_sizes
                         for i in range(0, len(sizes), blocks_per_group)), default=0)
    return WeightStats(total, largest_leaf, non_leaf, unmatched, largest_block, upcast, tuple(block_sizes), loaded)
