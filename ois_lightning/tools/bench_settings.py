"""The sizes and repeat counts of ``ois bench``: the paper's, or tiny ones for a quick smoke test."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Settings:
    """Sizes and repeat counts; ``quick`` is a smoke test that finishes in well under a minute."""

    quick: bool
    paper_input: int
    paper_backbone: str
    tiny_input: int
    warmup: int
    repeats: int
    slow_repeats: int  # for the seconds-long calls (encoder at 1036)
    train_steps: int
    train_batch: int
    vitb_train_input: int  # ViT-B training step (0: skipped)
    vitb_train_steps: int
    grid_objects: int  # objects evaluated per row (layered scenes hold 3-5 each)
    grid_clicks: int
    sat_backbone: str  # SAT latency (Table 3): backbone, input size and points per side of the prompt grid
    sat_input: int
    sat_grid: int
    compare_clicks: int = 5
    sat_batch: int = 16  # points decoded at once over the shared encoding

    @classmethod
    def make(cls, quick: bool, device: torch.device = torch.device("cpu")) -> "Settings":
        """The paper's sizes (tiny ones with ``quick``); the SAT grid and the ViT-B training step run at the paper's
        size on CUDA, at the tiny size / 518 on CPU (there 256 paper-size clicks take ~10 min, a 1036 step minutes)."""
        if quick:
            return cls(True, 112, "tiny", 112, 1, 3, 1, 3, 2, 0, 0, 1, 5, "tiny", 112, 4)
        cuda = device.type == "cuda"
        sat = ("dav2-vitb", 1036) if cuda else ("tiny", 224)
        return cls(False, 1036, "dav2-vitb", 224, 1, 5, 3, 12, 8, 1036 if cuda else 518, 6, 6, 20, *sat, 16)
