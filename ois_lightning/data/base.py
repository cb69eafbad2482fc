"""Common data interface: :class:`Sample`, :class:`DataError`, :class:`SegDataset`, and the file pairing and
reading helpers shared by the folder layouts (GrabCut, Berkeley, DAVIS, HQSeg44K)."""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch

from .truncation import is_truncated

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
MASK_EXTS = (".png", ".bmp")

IGNORE = -1  # instance-mask value of pixels excluded from clicks and IoU

Pair = tuple[Path, Path, str]  # (image file, mask file, sample id)


@dataclass
class Sample:
    """One image with all its instance masks.

    ``masks`` is (K,H,W) int8: 1 object, 0 background, -1 ignore; K may be 0. ``valid`` is set only by
    transforms: (H,W) bool, False on padding and on areas an affine warp filled in. ``parents`` (K,) int is set
    by a dataset with an object hierarchy (isegm COCO+LVIS training read): the index of each mask's parent mask,
    -1 for a root; None means every mask is a root.
    """

    image: np.ndarray  # H,W,3 uint8 RGB
    masks: np.ndarray  # K,H,W int8
    depth: np.ndarray | None  # H,W float32, or None
    id: str  # stable id, e.g. "grabcut/124080"
    depth_kind: str = "disparity"  # "disparity" (larger = closer) or "depth" (larger = farther)
    valid: np.ndarray | None = None  # H,W bool, set by ois_lightning.data.transforms.apply
    parents: np.ndarray | None = None  # K int: parent mask index, -1 = root; None = no hierarchy


class DataError(ValueError):
    """Bad input data; the message names the file and what was expected. ``kind`` groups problems in reports."""

    kind = "invalid data"


class UnreadableFile(DataError):
    """A file that cannot be decoded, or is truncated."""

    kind = "unreadable or truncated"


class SizeMismatch(DataError):
    """Two files of one sample (image and mask, image and depth) of different sizes."""

    kind = "size mismatch"


class MissingFile(DataError):
    """A file a sample needs (its mask, its depth map) is not there."""

    kind = "missing file"


_COLLECTED: contextvars.ContextVar[list[DataError] | None] = contextvars.ContextVar("collected", default=None)


@contextlib.contextmanager
def collect_problems() -> Iterator[list[DataError]]:
    """Inside this block, :func:`problem` records build-time problems (an image without its mask, ...) in the
    yielded list instead of raising, and the loader leaves the item out: ``ois check-data`` reports every problem
    of a tree in one run. Outside it the first problem raises, as a run needs."""
    token = _COLLECTED.set([])
    try:
        yield _COLLECTED.get()  # type: ignore[misc]
    finally:
        _COLLECTED.reset(token)


def problem(error: DataError) -> None:
    """Raise ``error``, or record it when called inside :func:`collect_problems` (the caller skips the item)."""
    collected = _COLLECTED.get()
    if collected is None:
        raise error
    collected.append(error)


class SegDataset(torch.utils.data.Dataset):
    """Base of every dataset: ``len(ds)``, ``ds[i] -> Sample`` and a ``name`` attribute."""

    name: str = "dataset"
    has_depth: bool = False  # samples carry their own depth map (data.depth.source=gt)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        raise NotImplementedError


def _decode(path: Path, flags: int, what: str) -> np.ndarray:
    """Decode an image file with OpenCV; unreadable or truncated (:func:`is_truncated`) is an UnreadableFile."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UnreadableFile(f"{path}: cannot read {what} ({e.strerror})") from None
    if not data:  # OpenCV asserts on an empty buffer instead of returning None
        raise UnreadableFile(f"{path}: {what} file is empty (0 bytes; expected a JPEG / PNG image)")
    if is_truncated(data):
        raise UnreadableFile(f"{path}: {what} file is truncated (expected a complete JPEG / PNG)")
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if decoded is None:
        raise UnreadableFile(f"{path}: cannot read {what} (expected a readable image file)")
    return decoded


def read_image(path: Path) -> np.ndarray:
    """Read an image file as H,W,3 uint8 RGB."""
    return cv2.cvtColor(_decode(path, cv2.IMREAD_COLOR, "image"), cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    """Read a mask file at its stored bit depth: H,W or H,W,3 (OpenCV channel order; alpha dropped)."""
    mask = _decode(path, cv2.IMREAD_UNCHANGED, "mask")
    return mask[..., :3] if mask.ndim == 3 else mask


def check_same_size(image: np.ndarray, image_path: Path, mask: np.ndarray, mask_path: Path) -> None:
    """Raise a DataError naming both files when the mask's H,W differ from the image's."""
    if image.shape[:2] != mask.shape[:2]:
        raise SizeMismatch(
            f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} does not match image {image_path} "
            f"size {image.shape[1]}x{image.shape[0]} (expected equal width x height)"
        )


def files_with_ext(folder: Path, exts: Sequence[str], recursive: bool = False) -> list[Path]:
    """Sorted files of ``folder`` whose suffix (case-insensitive) is in ``exts``; a missing folder is a DataError."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (expected a directory)")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in exts)


def find_mask(mask_dir: Path, stem: str, exts: Sequence[str], image_path: Path) -> Path | None:
    """The first ``mask_dir/stem<ext>`` that exists, trying ``exts`` in order (either case); none is a
    :func:`problem` (None returned inside :func:`collect_problems`)."""
    for ext in exts:
        for candidate in (mask_dir / f"{stem}{ext}", mask_dir / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    problem(MissingFile(
        f"{image_path}: no mask file for this image (expected one of "
        f"{', '.join(str(mask_dir / (stem + e)) for e in exts)})"
    ))
    return None


def pair_by_stem(name: str, image_dir: Path, mask_dir: Path, mask_exts: Sequence[str] = MASK_EXTS) -> list[Pair]:
    """Pair every image of ``image_dir`` with the same-stem mask in ``mask_dir``; ids are ``name/stem``."""
    images = files_with_ext(image_dir, IMAGE_EXTS)
    if not images:
        raise DataError(f"{image_dir}: no images found (expected files ending in {', '.join(IMAGE_EXTS)})")
    pairs = ((p, find_mask(mask_dir, p.stem, mask_exts, p), f"{name}/{p.stem}") for p in images)
    return [(image, mask, sample_id) for image, mask, sample_id in pairs if mask is not None]


class MaskedImageFolder(SegDataset):
    """One binary object per image, read from (image, mask, id) file pairs listed at construction.

    Subclasses set ``name`` and implement :meth:`decode` (stored mask -> H,W int8). An object-free mask
    gives K=0.
    """

    def __init__(self, pairs: list[Pair]):
        self.pairs = pairs

    @classmethod
    def from_root(cls, root: str, split: str, **kw: Any) -> SegDataset:
        """Registry entry: a single-split benchmark, so ``split`` is ignored."""
        return cls(root, **kw)

    @staticmethod
    def decode(raw: np.ndarray) -> np.ndarray:
        """Stored mask (H,W or H,W,C) -> H,W int8 with 1 object, 0 background, -1 ignore."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Sample:
        image_path, mask_path, sample_id = self.pairs[i]
        image = read_image(image_path)
        raw = read_mask(mask_path)
        check_same_size(image, image_path, raw, mask_path)
        mask = self.decode(raw)
        masks = mask[None] if (mask == 1).any() else np.zeros((0, *mask.shape), np.int8)
        return Sample(image=image, masks=masks, depth=None, id=sample_id)


def first_channel(raw: np.ndarray) -> np.ndarray:
    """Channel 0 of a stored mask (OpenCV order), or the mask itself when it has one channel."""
    return raw[..., 0] if raw.ndim == 3 else raw


def max_channel(raw: np.ndarray) -> np.ndarray:
    """Maximum over the channels of a stored mask."""
    return raw.max(axis=2) if raw.ndim == 3 else raw


def binary(values: np.ndarray) -> np.ndarray:
    """``values > 0`` as an int8 object mask (1 object, 0 background)."""
    return (values > 0).astype(np.int8)
