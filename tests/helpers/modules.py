"""Small torch modules with known parameter sizes."""
from __future__ import annotations

import torch


class Blocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj_in = torch.nn.Linear(4, 4)                       # 80 bytes, skipped by fp8
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(3)])  # 288 each
        self.norm = torch.nn.LayerNorm(8)                          # 64 bytes, skipped by fp8
        self.scale = torch.nn.Parameter(torch.ones(2))             # 8 bytes, owned by the root
