"""Berkeley: ``root/images/<stem>.*`` images, ``root/masks/<stem>.{png,bmp}`` masks; object = channel 0 > 0."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import MaskedImageFolder, binary, first_channel, pair_by_stem


class Berkeley(MaskedImageFolder):
    """The Berkeley benchmark (100 objects); ids ``berkeley/<stem>``."""

    name = "berkeley"

    def __init__(self, root: str | Path):
        root = Path(root)
        super().__init__(pair_by_stem(self.name, root / "images", root / "masks"))

    @staticmethod
    def decode(raw: np.ndarray) -> np.ndarray:
        """Channel 0 (OpenCV order) > 0 is the object."""
        return binary(first_channel(raw))
