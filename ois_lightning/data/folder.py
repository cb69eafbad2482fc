"""A user's own data: ``root/images/<stem>.{jpg,jpeg,png,bmp}`` with, in ``root/masks/``, either ``<stem>.png``
(one object) or ``<stem>_0.png``, ``<stem>_1.png``, ... (one file per object, numbered from 0 without gaps; a
``<stem>.png`` takes precedence). A mask pixel is object when any channel is > 0, so 0/1 and 0/255 masks both
work; there is no ignore value.

The naming follows isegm's ``ImagesDirDataset`` (SamsungLabs/ritm_interactive_segmentation,
``isegm/data/datasets/images_dir.py``: masks ``<stem>.*`` or ``<stem>_<number>.*``), which decodes GrabCut-style
(128 ignore, above 128 object); the simpler > 0 rule here accepts any binary mask.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    IMAGE_EXTS,
    DataError,
    Sample,
    SegDataset,
    binary,
    check_same_size,
    files_with_ext,
    max_channel,
    problem,
    read_image,
    read_mask,
)


def object_files(mask_dir: Path, image: Path) -> list[Path]:
    """The mask files of ``image``: ``<stem>.png``, else ``<stem>_0.png``, ``<stem>_1.png``, ...; none is a
    :func:`problem` (empty list inside ``collect_problems``)."""
    single = mask_dir / f"{image.stem}.png"
    if single.is_file():
        return [single]
    files = []
    while (path := mask_dir / f"{image.stem}_{len(files)}.png").is_file():
        files.append(path)
    if not files:
        problem(DataError(f"{image}: no mask file for this image (expected {single} or "
                          f"{mask_dir / (image.stem + '_0.png')}, {mask_dir / (image.stem + '_1.png')}, ...)"))
    return files


class UserFolder(SegDataset):
    """Images with one or more binary object masks each; ids ``folder/<stem>``. Object-free masks are left out
    (K counts the masks with an object pixel)."""

    name = "folder"

    def __init__(self, root: str | Path):
        root = Path(root)
        images = files_with_ext(root / "images", IMAGE_EXTS)
        if not images:
            raise DataError(f"{root / 'images'}: no images found (expected files ending in {', '.join(IMAGE_EXTS)})")
        found = ((image, object_files(root / "masks", image)) for image in images)
        self.items = [(image, masks, f"{self.name}/{image.stem}") for image, masks in found if masks]

    @classmethod
    def from_root(cls, root: str, split: str, **kw: Any) -> SegDataset:
        """Registry entry: one folder is one split, so ``split`` is ignored."""
        return cls(root, **kw)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        image_path, mask_paths, sample_id = self.items[i]
        image = read_image(image_path)
        masks = []
        for path in mask_paths:
            raw = read_mask(path)
            check_same_size(image, image_path, raw, path)
            masks.append(binary(max_channel(raw)))  # H,W
        kept = [m for m in masks if m.any()]
        stacked = np.stack(kept) if kept else np.zeros((0, *image.shape[:2]), np.int8)  # K,H,W
        return Sample(image=image, masks=stacked, depth=None, id=sample_id)
