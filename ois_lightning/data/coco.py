"""COCO and LVIS instance annotations (official JSON, polygons or RLE) read through pycocotools.

Every image is one Sample whose masks are its non-crowd annotations. Crowd regions (``iscrowd=1``) are plain
background, as in isegm's COCO loader, which leaves crowd segments out of its instance map
(SamsungLabs/ritm_interactive_segmentation, ``isegm/data/datasets/coco.py``). No area filter here: the training
wrapper drops objects under ``data.min_object_area`` after augmentation (``training.py``). Images without a
non-crowd annotation are dropped when the dataset is built.

LVIS v1 labels COCO 2017 images under their COCO image ids, so :class:`InstanceUnion` (``data.train=[coco, lvis]``)
makes one Sample per image id with the instances of both files.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np
from pycocotools.coco import COCO

from .base import DataError, Sample, SegDataset, SizeMismatch, read_image


@dataclass(frozen=True)
class Entry:
    """One image of an annotation file and its non-crowd annotation ids."""

    image_id: int
    file_name: str
    objects: tuple[int, ...]


class COCOInstances(SegDataset):
    """Instances of a COCO-format annotation file; ids ``<name>/<image file stem>``."""

    name = "coco"

    def __init__(self, ann_file: str | Path, image_dir: str | Path):
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
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

    def _entry(self, image: dict) -> Entry:
        anns = self.coco.imgToAnns.get(image["id"], [])
        objects = tuple(a["id"] for a in anns if not a.get("iscrowd", 0))
        return Entry(image["id"], self._file_name(image), objects)

    def check_size(self, entry: Entry, image: np.ndarray, path: Path) -> None:
        """A SizeMismatch naming ``path`` when ``image`` is not the size this file gives for ``entry``."""
        info = self.coco.imgs[entry.image_id]
        if image.shape[:2] != (info["height"], info["width"]):
            raise SizeMismatch(
                f"{path}: image size {image.shape[1]}x{image.shape[0]} does not match {self.ann_file} "
                f"(expected {info['width']}x{info['height']} for image id {entry.image_id})"
            )

    def read_image(self, entry: Entry) -> tuple[np.ndarray, Path]:
        """The image of ``entry`` (H,W,3 RGB), checked against its annotated size, and its path."""
        path = self.image_dir / entry.file_name
        image = read_image(path)
        self.check_size(entry, image, path)
        return image, path

    def masks(self, entry: Entry) -> np.ndarray:
        """One int8 object mask per non-crowd annotation of ``entry`` (K,H,W)."""
        return np.stack([self.coco.annToMask(self.coco.anns[a]) for a in entry.objects]).astype(np.int8)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Sample:
        entry = self.entries[i]
        image, _ = self.read_image(entry)
        return Sample(image=image, masks=self.masks(entry), depth=None, id=f"{self.name}/{Path(entry.file_name).stem}")


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


class InstanceUnion(SegDataset):
    """One Sample per image id over COCO-format datasets of the same images (COCO and LVIS): the image is read
    from the first part that lists it, the masks of every part follow in part order. Name ``coco+lvis``, ids
    ``coco+lvis/<image file stem>``."""

    def __init__(self, parts: Sequence[COCOInstances]):
        self.parts = list(parts)
        self.name = "+".join(p.name for p in self.parts)
        by_id: dict[int, list[tuple[COCOInstances, Entry]]] = {}
        for part in self.parts:
            for entry in part.entries:
                by_id.setdefault(entry.image_id, []).append((part, entry))
        self.images = [by_id[k] for k in sorted(by_id)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Sample:
        (first, entry), *rest = self.images[i]
        image, path = first.read_image(entry)
        for part, other in rest:
            part.check_size(other, image, path)
        masks = np.concatenate([part.masks(e) for part, e in self.images[i]])  # K,H,W
        return Sample(image=image, masks=masks, depth=None, id=f"{self.name}/{Path(entry.file_name).stem}")

