"""GrabCut: ``root/data_GT/<stem>.{jpg,bmp,png}`` images, ``root/boundary_GT/<stem>.{bmp,png}`` masks.

Mask values: 255 object, 128 uncertain boundary band (ignore, -1), 0 background.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import IGNORE, MaskedImageFolder, first_channel, pair_by_stem

BAND = 128  # stored value of the uncertain band


class GrabCut(MaskedImageFolder):
    """The 50-image GrabCut benchmark; ids ``grabcut/<stem>``."""

    name = "grabcut"

    def __init__(self, root: str | Path):
        root = Path(root)
        super().__init__(pair_by_stem(self.name, root / "data_GT", root / "boundary_GT", (".bmp", ".png")))

    @staticmethod
    def decode(raw: np.ndarray) -> np.ndarray:
        """255 (any value above the band) -> 1, 128 -> -1, below -> 0."""
        values = first_channel(raw)
        mask = (values > BAND).astype(np.int8)
        mask[values == BAND] = IGNORE
        return mask
