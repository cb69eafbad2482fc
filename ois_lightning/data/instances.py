"""Datasets whose images are listed in a split file and annotated by an instance-id map (SBD, PASCAL VOC): the
list reading, the image/annotation pairing and the id map -> K,H,W masks step shared by ``sbd.py`` and
``pascalvoc.py``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import IGNORE, DataError, Pair, Sample, SegDataset, check_same_size, problem, read_image


def split_list(dataset: str, lists: dict[str, str], split: str) -> str:
    """The split list of ``split`` in ``lists``; an unknown split is a DataError naming the dataset."""
    if split not in lists:
        raise DataError(f"{dataset}: unknown split {split!r} (expected one of {', '.join(lists)})")
    return lists[split]


def read_names(list_file: Path) -> list[str]:
    """The non-empty, stripped lines of a split list (one image name per line)."""
    if not list_file.is_file():
        raise DataError(f"{list_file}: split list not found (expected a text file with one image name per line)")
    return [line.strip() for line in list_file.read_text().splitlines() if line.strip()]


def listed_pairs(
    name: str, names: list[str], image_dir: Path, image_ext: str, ann_dir: Path, ann_ext: str
) -> list[Pair]:
    """(image, annotation, ``name/<image name>``) for every listed name; a missing file is a :func:`problem`."""
    pairs = []
    for stem in names:
        image, ann = image_dir / f"{stem}{image_ext}", ann_dir / f"{stem}{ann_ext}"
        missing = [p for p in (image, ann) if not p.is_file()]
        for path in missing:
            problem(DataError(f"{path}: file not found (expected for {stem!r}, listed in the split file)"))
        if not missing:
            pairs.append((image, ann, f"{name}/{stem}"))
    return pairs


def instance_masks(ids: np.ndarray, object_ids: list[int], ignore_id: int | None = None) -> np.ndarray:
    """One int8 mask per id of ``object_ids`` (1 on its pixels, 0 elsewhere, -1 on ``ignore_id`` pixels)."""
    masks = np.zeros((len(object_ids), *ids.shape), np.int8)  # K,H,W
    for mask, k in zip(masks, object_ids):
        mask[ids == k] = 1
    if ignore_id is not None:
        masks[:, ids == ignore_id] = IGNORE
    return masks


class InstanceMaps(SegDataset):
    """One Sample per listed image holding a mask per instance id. Subclasses set ``name`` and implement
    :meth:`read_ids`; :meth:`object_ids` and ``ignore_id`` say which ids are objects and which is ignore."""

    ignore_id: int | None = None

    def __init__(self, pairs: list[Pair]):
        self.pairs = pairs

    @classmethod
    def from_root(cls, root: str, split: str, **kw: Any) -> SegDataset:
        """Registry entry: ``split`` picks the split list."""
        return cls(root, split, **kw)

    def read_ids(self, path: Path) -> np.ndarray:
        """The instance-id map (H,W integer) stored in annotation file ``path``."""
        raise NotImplementedError

    def object_ids(self, ids: np.ndarray) -> list[int]:
        """The ids of the map that are objects: every id but 0 and ``ignore_id``, ascending."""
        return [int(k) for k in np.unique(ids) if k != 0 and k != self.ignore_id]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Sample:
        image_path, ann_path, sample_id = self.pairs[i]
        image = read_image(image_path)
        ids = self.read_ids(ann_path)  # H,W
        check_same_size(image, image_path, ids, ann_path)
        masks = instance_masks(ids, self.object_ids(ids), self.ignore_id)  # K,H,W
        return Sample(image=image, masks=masks, depth=None, id=sample_id)
