"""HQSeg44K: under ``root/<subfolder>/`` (searched recursively) every ``*.jpg`` image has a same-stem ``*.png``
mask beside it; object = any mask channel > 0.

The train and val splits are lists of sub-folders, kept only in :data:`HQSEG44K_SPLITS`:

- train (about 44k images): DIS5K/DIS-TR, ThinObject5K/images_train and the cascade_psp collection
  (fss_all, DUTS-TR, DUTS-TE, ecssd, MSRA_10K);
- val: DIS5K/DIS-VD, ThinObject5K/images_test, COIFT/images, HRSOD/images ("test" is the same list: the
  benchmark reports its val split).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import DataError, MaskedImageFolder, Pair, SegDataset, binary, files_with_ext, find_mask, max_channel

HQSEG44K_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "DIS5K/DIS-TR",
        "ThinObject5K/images_train",
        "cascade_psp/fss_all",
        "cascade_psp/DUTS-TR",
        "cascade_psp/DUTS-TE",
        "cascade_psp/ecssd",
        "cascade_psp/MSRA_10K",
    ),
    "val": ("DIS5K/DIS-VD", "ThinObject5K/images_test", "COIFT/images", "HRSOD/images"),
}
HQSEG44K_SPLITS["test"] = HQSEG44K_SPLITS["val"]  # the benchmark is evaluated on its val split


class HQSeg44K(MaskedImageFolder):
    """HQSeg44K sub-folders; ids ``hqseg44k/<subfolder>/<path below it without suffix>``."""

    name = "hqseg44k"

    def __init__(self, root: str | Path, subfolders: Sequence[str] | None = None, split: str = "train"):
        """``subfolders`` defaults to ``HQSEG44K_SPLITS[split]``; a missing sub-folder is a DataError."""
        if subfolders is None:
            if split not in HQSEG44K_SPLITS:
                raise DataError(f"{root}: unknown HQSeg44K split {split!r} (expected {sorted(HQSEG44K_SPLITS)})")
            subfolders = HQSEG44K_SPLITS[split]
        root = Path(root)
        super().__init__([pair for sub in subfolders for pair in self._pairs(root, sub)])

    @classmethod
    def from_root(cls, root: str, split: str, **kw: Any) -> SegDataset:
        return cls(root, split=split, **kw)

    def _pairs(self, root: Path, subfolder: str) -> list[Pair]:
        folder = root / subfolder
        if not folder.is_dir():
            raise DataError(f"{folder}: HQSeg44K sub-folder {subfolder!r} not found (expected a directory)")
        images = files_with_ext(folder, (".jpg",), recursive=True)
        if not images:
            raise DataError(f"{folder}: no *.jpg images found in HQSeg44K sub-folder {subfolder!r}")
        return [
            (p, find_mask(p.parent, p.stem, (".png",), p), f"{self.name}/{subfolder}/{self._stem_path(p, folder)}")
            for p in images
        ]

    @staticmethod
    def _stem_path(path: Path, folder: Path) -> str:
        return path.relative_to(folder).with_suffix("").as_posix()

    @staticmethod
    def decode(raw: np.ndarray) -> np.ndarray:
        """Any channel > 0 is the object."""
        return binary(max_channel(raw))
