"""GrabCut: ``root/data_GT/<stem>.{jpg,bmp,png}`` images, ``root/boundary_GT/<stem>.{bmp,png}`` masks.

Decoding follows isegm (SamsungLabs/ritm_interactive_segmentation, ``isegm/data/datasets/grabcut.py``): channel 0
of the mask, 128 = uncertain boundary band (ignore, -1), above 128 or exactly 1 = object, anything else background.
The real files hold 0 / 128 / 255. Berkeley (``berkeley.py``) reuses this rule, as isegm's Berkeley loader
subclasses the GrabCut one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .base import IGNORE, MaskedImageFolder, first_channel, pair_by_stem

BAND = 128  # stored value of the uncertain band


class GrabCut(MaskedImageFolder):
    """The 50-image GrabCut benchmark; ids ``grabcut/<stem>``. Subclasses change ``name``, ``folders`` and
    ``mask_exts``."""

    name = "grabcut"
    folders = ("data_GT", "boundary_GT")  # (images, masks) under root
    mask_exts: Sequence[str] = (".bmp", ".png")

    def __init__(self, root: str | Path):
        root = Path(root)
        images, masks = self.folders
        super().__init__(pair_by_stem(self.name, root / images, root / masks, self.mask_exts))

    @staticmethod
    def decode(raw: np.ndarray) -> np.ndarray:
        """Channel 0: 128 -> -1; above 128 or exactly 1 -> 1; anything else -> 0."""
        values = first_channel(raw)  # H,W
        mask = ((values > BAND) | (values == 1)).astype(np.int8)
        mask[values == BAND] = IGNORE
        return mask
