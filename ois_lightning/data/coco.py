"""COCO and LVIS instance annotations (official JSON, polygons or RLE) read through pycocotools.

Every image is one Sample whose masks are its non-crowd objects of at least ``min_area`` pixels (the
annotation's ``area`` field); crowd regions are ignore (-1) in every instance mask and never objects. Images
left without an object are dropped when the dataset is built.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from .base import IGNORE, DataError, Sample, SegDataset, read_image


@dataclass(frozen=True)
class _Entry:
    image_id: int
    file_name: str
    objects: tuple[int, ...]  # annotation ids
    crowds: tuple[int, ...]


class COCOInstances(SegDataset):
    """Instances of a COCO-format annotation file; ids ``<name>/<image file stem>``."""

    name = "coco"

    def __init__(self, ann_file: str | Path, image_dir: str | Path, min_area: int = 1000):
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.min_area = min_area
        self.coco = self._load(self.ann_file)
        entries = (self._entry(image) for _, image in sorted(self.coco.imgs.items()))
        self.entries = [e for e in entries if e.objects]

    @classmethod
    def from_root(cls, root: str, split: str, **kw: Any) -> SegDataset:
        """Registry entry: ``root/annotations/instances_<split>2017.json`` and ``root/<split>2017/``."""
        kw.setdefault("ann_file", Path(root) / "annotations" / f"instances_{split}2017.json")
        kw.setdefault("image_dir", Path(root) / f"{split}2017")
        return cls(**kw)

    @staticmethod
    def _load(ann_file: Path) -> COCO:
        try:
            dataset = json.loads(ann_file.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{ann_file}: cannot read annotation file (expected COCO-format JSON): {e}") from e
        if not isinstance(dataset, dict) or not {"images", "annotations"} <= dataset.keys():
            raise DataError(f"{ann_file}: expected a JSON object with 'images' and 'annotations'")
        coco = COCO()
        coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        return coco

    def _file_name(self, image: dict) -> str:
        """``file_name``, or (LVIS) the last path component of ``coco_url``."""
        if "file_name" in image:
            return image["file_name"]
        if "coco_url" in image:
            return urlparse(image["coco_url"]).path.rsplit("/", 1)[-1]
        raise DataError(f"{self.ann_file}: image {image.get('id')} has neither 'file_name' nor 'coco_url'")

    def _area(self, ann: dict) -> float:
        if "area" in ann:
            return float(ann["area"])
        return float(mask_utils.area(self.coco.annToRLE(ann)))

    def _entry(self, image: dict) -> _Entry:
        anns = self.coco.imgToAnns.get(image["id"], [])
        crowds = tuple(a["id"] for a in anns if a.get("iscrowd", 0))
        objects = tuple(a["id"] for a in anns if not a.get("iscrowd", 0) and self._area(a) >= self.min_area)
        return _Entry(image["id"], self._file_name(image), objects, crowds)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Sample:
        entry = self.entries[i]
        info = self.coco.imgs[entry.image_id]
        path = self.image_dir / entry.file_name
        image = read_image(path)
        if image.shape[:2] != (info["height"], info["width"]):
            raise DataError(
                f"{path}: image size {image.shape[1]}x{image.shape[0]} does not match {self.ann_file} "
                f"(expected {info['width']}x{info['height']} for image id {entry.image_id})"
            )
        masks = np.stack([self.coco.annToMask(self.coco.anns[a]) for a in entry.objects]).astype(np.int8)
        if entry.crowds:
            crowd = np.any([self.coco.annToMask(self.coco.anns[a]) for a in entry.crowds], axis=0)
            masks[(masks == 0) & crowd[None]] = IGNORE
        return Sample(image=image, masks=masks, depth=None, id=f"{self.name}/{Path(entry.file_name).stem}")


class LVISInstances(COCOInstances):
    """LVIS v1 (same JSON schema; images named by ``coco_url``, no ``iscrowd``)."""

    name = "lvis"

    @classmethod
    def from_root(cls, root: str, split: str, **kw: Any) -> SegDataset:
        """Registry entry: ``root/annotations/lvis_v1_<split>.json`` and ``root/images/``.

        LVIS v1 val draws images from both COCO train2017 and val2017, so ``images/`` holds (links to) all of
        them; pass ``image_dir`` to override.
        """
        kw.setdefault("ann_file", Path(root) / "annotations" / f"lvis_v1_{split}.json")
        kw.setdefault("image_dir", Path(root) / "images")
        return cls(**kw)
