"""PASCAL VOC 2012 instance segmentation in its published layout (the ``VOC2012`` folder of the devkit):
``root/JPEGImages/<name>.jpg``, ``root/SegmentationObject/<name>.png`` and the split lists
``root/ImageSets/Segmentation/{train,val,trainval}.txt``.

``SegmentationObject`` PNGs are palette images whose indices are instance ids: 0 background, 1..254 one object
each, 255 the unlabelled boundary band (ignore, -1, in every instance mask). The indices are read directly (PIL
mode "P", or "L" for a grey re-save), never the palette colours. isegm (SamsungLabs/ritm_interactive_segmentation,
``isegm/data/datasets/pascalvoc.py``) reaches the same partition through the grey value of the colours, ignoring
grey 220 (the colour of index 255) and taking every other non-zero value as one object; its ``test`` split is a
pickled (image, instance) list of its own. VOC2012 test masks are not published, so split ``test`` here reads
the val list, the one the benchmark reports.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import DataError
from .instances import InstanceMaps, listed_pairs, read_names, split_list

VOID = 255  # palette index of the unlabelled band
LISTS = {"train": "train", "val": "val", "trainval": "trainval", "test": "val"}


class PascalVOC(InstanceMaps):
    """VOC2012 instances, one Sample per listed image with K masks; ids ``pascalvoc/<name>``."""

    name = "pascalvoc"
    ignore_id = VOID

    def __init__(self, root: str | Path, split: str = "val"):
        root = Path(root)
        listed = split_list("pascalvoc", LISTS, split)
        names = read_names(root / "ImageSets" / "Segmentation" / f"{listed}.txt")
        masks = root / "SegmentationObject"
        super().__init__(listed_pairs(self.name, names, root / "JPEGImages", ".jpg", masks, ".png"))

    @staticmethod
    def read_ids(path: Path) -> np.ndarray:
        """The palette indices of the PNG (H,W uint8)."""
        try:
            with Image.open(path) as image:
                mode, ids = image.mode, np.array(image)
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{path}: cannot read instance PNG (expected a palette PNG): {err}") from err
        if mode not in ("P", "L"):
            raise DataError(f"{path}: image mode {mode!r} (expected a palette PNG of instance indices, "
                            "mode 'P' or 'L')")
        return ids
