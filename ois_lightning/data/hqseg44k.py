"""HQSeg44K in the layout of its public release (SysCV/sam-hq ``train/train.py``, ``dataset_*`` entries; the same
tree is read by uyzhang/SegNext): ``root`` holds ``DIS5K/``, ``cascade_psp/`` and ``thin_object_detection/``.

Each subset is an image folder of ``*.jpg`` files (listed flat and sorted; the suffix is case-sensitive, as the
references' ``glob``: ``*.JPG`` files are not listed) and a mask folder holding the
same-stem ``*.png`` (for the cascade_psp subsets the same folder); object = any mask channel > 0. The splits,
kept only in :data:`HQSEG44K_SPLITS`, are 44,320 train and 1,537 val images; "test" is the val list (the
benchmark reports its val split).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import (
    DataError,
    MaskedImageFolder,
    MissingFile,
    Pair,
    SegDataset,
    binary,
    files_with_ext,
    find_mask,
    max_channel,
    problem,
)


@dataclass(frozen=True)
class Subset:
    """One subset of the release: its name and its image / mask folders relative to the root."""

    name: str
    images: str
    masks: str


THIN = "thin_object_detection"
HQSEG44K_SPLITS: dict[str, tuple[Subset, ...]] = {
    "train": (
        Subset("DIS5K-TR", "DIS5K/DIS-TR/im", "DIS5K/DIS-TR/gt"),
        Subset("ThinObject5K-TR", f"{THIN}/ThinObject5K/images_train", f"{THIN}/ThinObject5K/masks_train"),
        Subset("FSS", "cascade_psp/fss_all", "cascade_psp/fss_all"),
        Subset("DUTS-TR", "cascade_psp/DUTS-TR", "cascade_psp/DUTS-TR"),
        Subset("DUTS-TE", "cascade_psp/DUTS-TE", "cascade_psp/DUTS-TE"),
        Subset("ECSSD", "cascade_psp/ecssd", "cascade_psp/ecssd"),
        Subset("MSRA10K", "cascade_psp/MSRA_10K", "cascade_psp/MSRA_10K"),
    ),
    "val": (
        Subset("DIS5K-VD", "DIS5K/DIS-VD/im", "DIS5K/DIS-VD/gt"),
        Subset("ThinObject5K-TE", f"{THIN}/ThinObject5K/images_test", f"{THIN}/ThinObject5K/masks_test"),
        Subset("COIFT", f"{THIN}/COIFT/images", f"{THIN}/COIFT/masks"),
        Subset("HRSOD", f"{THIN}/HRSOD/images", f"{THIN}/HRSOD/masks_max255"),
    ),
}
HQSEG44K_SPLITS["test"] = HQSEG44K_SPLITS["val"]  # the benchmark is evaluated on its val split
SUBSETS = {s.name: s for split in HQSEG44K_SPLITS.values() for s in split}


class HQSeg44K(MaskedImageFolder):
    """The subsets of one split, or those named by ``subsets`` (any split); ids ``hqseg44k/<subset>/<stem>``."""

    name = "hqseg44k"

    def __init__(self, root: str | Path, split: str = "train", subsets: Sequence[str] | None = None):
        """A missing subset folder or mask is a :func:`~.base.problem` (the subset or image is left out)."""
        if split not in HQSEG44K_SPLITS:
            raise DataError(f"{root}: unknown HQSeg44K split {split!r} (expected one of {sorted(HQSEG44K_SPLITS)})")
        names = [s.name for s in HQSEG44K_SPLITS[split]] if subsets is None else list(subsets)
        unknown = [n for n in names if n not in SUBSETS]
        if unknown:
            raise DataError(f"{root}: unknown HQSeg44K subsets {unknown} (expected names from {sorted(SUBSETS)})")
        super().__init__([pair for n in names for pair in self._pairs(Path(root), SUBSETS[n])])

    @classmethod
    def from_root(cls, root: str, split: str, **kw: Any) -> SegDataset:
        return cls(root, split=split, **kw)

    def _pairs(self, root: Path, subset: Subset) -> list[Pair]:
        image_dir, mask_dir = root / subset.images, root / subset.masks
        missing = next((d for d in (image_dir, mask_dir) if not d.is_dir()), None)
        if missing is not None:
            problem(MissingFile(f"{missing}: HQSeg44K {subset.name} folder not found (expected a directory)"))
            return []
        # case-sensitive, as sam-hq's and SegNext's glob("*.jpg"): an upper-case .JPG is not in the benchmark
        images = [p for p in files_with_ext(image_dir, (".jpg",)) if p.suffix == ".jpg"]
        if not images:
            problem(MissingFile(f"{image_dir}: no *.jpg images in HQSeg44K subset {subset.name}"))
        pairs = ((p, find_mask(mask_dir, p.stem, (".png",), p), f"{self.name}/{subset.name}/{p.stem}") for p in images)
        return [(image, mask, sample_id) for image, mask, sample_id in pairs if mask is not None]

    @staticmethod
    def decode(raw: np.ndarray) -> np.ndarray:
        """Any channel > 0 is the object."""
        return binary(max_channel(raw))
