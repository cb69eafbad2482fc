"""Berkeley: ``root/images/<stem>.*`` images, ``root/masks/<stem>.{png,bmp}`` masks, decoded with GrabCut's rule
(channel 0: 128 ignore, above 128 or exactly 1 object), as isegm's ``BerkeleyDataset`` subclasses its GrabCut
loader (SamsungLabs/ritm_interactive_segmentation, ``isegm/data/datasets/berkeley.py``)."""
from __future__ import annotations

from .base import MASK_EXTS
from .grabcut import GrabCut


class Berkeley(GrabCut):
    """The Berkeley benchmark (100 objects); ids ``berkeley/<stem>``."""

    name = "berkeley"
    folders = ("images", "masks")
    mask_exts = MASK_EXTS
