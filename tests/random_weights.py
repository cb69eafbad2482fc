"""Randomising the weights of a transformers model built from a config (its default init gives near-constant maps)."""
from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Weights ~ N(0, 1/fan_in), vectors ~ N(0, 0.01), norm scales around 1: every part changes the output."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        scale = 1 / math.sqrt(p[0].numel()) if p.ndim > 1 else 0.1
        offset = 1.0 if "norm" in name and name.endswith("weight") else 0.0
        p.copy_(torch.randn(p.shape, generator=g) * scale + offset)
    return model
