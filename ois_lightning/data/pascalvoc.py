"""PASCAL VOC 2012 instance segmentation in its published layout (the ``VOC2012`` folder of the devkit):
``root/JPEGImages/<name>.jpg``, ``root/SegmentationObject/<name>.png`` and the split lists
``root/ImageSets/Segmentation/{train,val,trainval}.txt``.

``SegmentationObject`` PNGs are palette images: index 0 background, 1..254 one object each, 255 the unlabelled
boundary band. Two decodings (``decode``; config ``data.pascalvoc_decode``):

* ``grey`` (default): isegm's (SamsungLabs/ritm_interactive_segmentation, ``isegm/data/datasets/pascalvoc.py``,
  the loader behind RITM's, SimpleClick's and SegNext's VOC numbers): the PNG is read as colour (OpenCV) and
  converted to grey (``COLOR_BGR2GRAY``); grey 220 (the colour of index 255) is ignore (-1) in every mask and
  every other non-zero grey value is one object, in ascending grey order. Different palette colours can share
  a grey value (indices 1 and 16, 3 and 18, 6 and 21, ...), so an image with 16 or more instances has pairs of
  instances merged into one object, as in the published numbers.
* ``index``: the palette indices themselves (PIL mode "P", or "L" for a grey re-save), the annotation's own
  partition: every index 1..254 one object, 255 ignore.

isegm's ``test`` split is a pickled (image, instance) list of its own; VOC2012 test masks are not published, so
split ``test`` here reads the val list, the one the benchmark reports.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import DataError, read_image
from .instances import InstanceMaps, listed_pairs, read_names, split_list

VOID = 255  # palette index of the unlabelled band
VOID_GREY = 220  # its grey value, isegm's ignore id
DECODINGS = ("grey", "index")
LISTS = {"train": "train", "val": "val", "trainval": "trainval", "test": "val"}


class PascalVOC(InstanceMaps):
    """VOC2012 instances, one Sample per listed image with K masks; ids ``pascalvoc/<name>``."""

    name = "pascalvoc"

    def __init__(self, root: str | Path, split: str = "val", decode: str = "grey"):
        if decode not in DECODINGS:
            raise DataError(f"pascalvoc: decode={decode!r} (expected one of {', '.join(DECODINGS)})")
        self.decode = decode
        self.ignore_id = VOID_GREY if decode == "grey" else VOID
        root = Path(root)
        listed = split_list("pascalvoc", LISTS, split)
        names = read_names(root / "ImageSets" / "Segmentation" / f"{listed}.txt")
        masks = root / "SegmentationObject"
        super().__init__(listed_pairs(self.name, names, root / "JPEGImages", ".jpg", masks, ".png"))

    def read_ids(self, path: Path) -> np.ndarray:
        """The grey values (``grey``) or the palette indices (``index``) of the PNG (H,W uint8)."""
        if self.decode == "grey":
            return cv2.cvtColor(read_image(path), cv2.COLOR_RGB2GRAY)
        return self.palette_indices(path)

    @staticmethod
    def palette_indices(path: Path) -> np.ndarray:
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
