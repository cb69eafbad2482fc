"""DAVIS (the 345-frame interactive subset): ``root/img/<stem>.*`` images, ``root/gt/<stem>.{png,bmp}`` masks;
object = maximum over the mask's channels > 0, as isegm decodes it (SamsungLabs/ritm_interactive_segmentation,
``isegm/data/datasets/davis.py``). COCO-MVal (``coco_mval.py``) is published in the same layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import MaskedImageFolder, binary, max_channel, pair_by_stem


class Davis(MaskedImageFolder):
    """The DAVIS-345 benchmark; ids ``<name>/<stem>`` (``davis/<stem>``)."""

    name = "davis"

    def __init__(self, root: str | Path):
        root = Path(root)
        super().__init__(pair_by_stem(self.name, root / "img", root / "gt"))

    @staticmethod
    def decode(raw: np.ndarray) -> np.ndarray:
        """Any channel > 0 is the object."""
        return binary(max_channel(raw))
