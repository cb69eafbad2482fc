"""SBD (Semantic Boundaries Dataset, Hariharan et al. 2011) in its published layout: ``root/img/<name>.jpg``,
``root/inst/<name>.mat`` (a MATLAB struct ``GTinst`` whose ``Segmentation`` field is the H,W uint8 instance-id
map, 0 background) and the split lists ``root/train.txt`` / ``root/val.txt``.

Facts from isegm (SamsungLabs/ritm_interactive_segmentation, ``isegm/data/datasets/sbd.py``): every non-zero id
is one object. Its training loader (``SBDDataset``) drops "buggy" instances whose area is below 0.08 of their
bounding box (inclusive pixel box, ``area / bbox_area < 0.08``); its evaluation loader (``SBDEvaluationDataset``,
the val list) keeps every instance. Here: split ``train`` drops them, ``val`` and ``test`` (the benchmark reports
val) keep all, unless ``min_bbox_fill`` says otherwise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.io.matlab import MatReadError

from .base import DataError
from .instances import InstanceMaps, listed_pairs, read_names, split_list

BUGGY_FILL = 0.08  # isegm's buggy_mask_thresh for the training split
LISTS = {"train": "train.txt", "val": "val.txt", "test": "val.txt"}


def bbox_fill(mask: np.ndarray) -> float:
    """Fraction of the (inclusive) bounding box of a non-empty H,W bool mask that the mask covers."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    return float(mask.sum()) / float(box)


class SBD(InstanceMaps):
    """SBD instances, one Sample per listed image with K masks; ids ``sbd/<name>``."""

    name = "sbd"

    def __init__(self, root: str | Path, split: str = "val", min_bbox_fill: float | None = None):
        root = Path(root)
        self.min_bbox_fill = (BUGGY_FILL if split == "train" else 0.0) if min_bbox_fill is None else min_bbox_fill
        names = read_names(root / split_list("sbd", LISTS, split))
        super().__init__(listed_pairs(self.name, names, root / "img", ".jpg", root / "inst", ".mat"))

    @staticmethod
    def read_ids(path: Path) -> np.ndarray:
        """``GTinst.Segmentation`` of the .mat file (H,W uint8)."""
        try:
            ids = loadmat(str(path))["GTinst"]["Segmentation"][0, 0]
        except (OSError, ValueError, LookupError, TypeError, MatReadError) as err:
            raise DataError(f"{path}: cannot read instances (expected a .mat file with a GTinst struct holding "
                            f"a Segmentation id map): {err}") from err
        if ids.ndim != 2:
            raise DataError(f"{path}: GTinst.Segmentation has shape {ids.shape} (expected an H,W id map)")
        return ids

    def object_ids(self, ids: np.ndarray) -> list[int]:
        """Non-zero ids, without those covering less than ``min_bbox_fill`` of their bounding box."""
        return [k for k in super().object_ids(ids) if bbox_fill(ids == k) >= self.min_bbox_fill]
