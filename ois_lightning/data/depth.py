"""Depth maps stored as files (``data.depth.source=file``): one file per image, named by the image stem.

Formats: ``<stem>.npy`` (H,W float array, values as saved) or ``<stem>.png`` (16-bit single channel, read as
float32 value / 65535). :func:`write_depth` writes ``.npy`` atomically.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np

from ..utils.atomic import atomic_write
from .base import DataError, MissingFile, Sample, SegDataset, SizeMismatch, UnreadableFile
from .draw import draw_sample

DEPTH_KINDS = ("disparity", "depth")
PNG_SCALE = 65535.0
DEPTH_META = "depth_meta.json"  # written by `ois depth-cache`: {"kind", "model", "checkpoint", "side"}


def read_depth(folder: str | Path, stem: str) -> np.ndarray:
    """``folder/<stem>.npy`` or else ``folder/<stem>.png`` as an H,W float32 array."""
    npy, png = Path(folder) / f"{stem}.npy", Path(folder) / f"{stem}.png"
    if npy.is_file():
        try:
            depth = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UnreadableFile(f"{npy}: cannot read depth (expected a .npy array): {e}") from e
        if depth.ndim != 2:
            raise DataError(f"{npy}: depth has shape {depth.shape} (expected H,W)")
        return depth.astype(np.float32)
    if png.is_file():
        depth = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        if depth is None or depth.dtype != np.uint16 or depth.ndim != 2:
            raise UnreadableFile(f"{png}: cannot read depth (expected a 16-bit single-channel PNG)")
        return depth.astype(np.float32) / PNG_SCALE
    raise MissingFile(f"no depth file for {stem!r} (expected {npy} or {png})")


def write_depth(path: str | Path, depth: np.ndarray) -> None:
    """Save an H,W depth map as float32 ``.npy`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    if path.suffix != ".npy":
        raise DataError(f"{path}: depth files are written as .npy (expected a path ending in .npy)")
    atomic_write(path, lambda f: np.save(f, np.asarray(depth, dtype=np.float32)), mode="wb")


def read_depth_meta(folder: str | Path) -> dict | None:
    """The ``depth_meta.json`` of a depth folder (None if the folder has none)."""
    path = Path(folder) / DEPTH_META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read depth metadata (expected JSON): {e}") from e
    if not isinstance(meta, dict) or meta.get("kind") not in DEPTH_KINDS:
        raise DataError(f"{path}: expected a JSON object with 'kind' in {DEPTH_KINDS}, got {meta!r}")
    return meta


def write_depth_meta(folder: str | Path, meta: dict) -> None:
    """Write ``depth_meta.json`` atomically."""
    atomic_write(Path(folder) / DEPTH_META, lambda f: json.dump(meta, f, indent=1))


class DepthFolder(SegDataset):
    """Wraps a dataset and replaces each Sample's depth by ``read_depth(folder, <last id component>)``."""

    def __init__(self, dataset: SegDataset, folder: str | Path, depth_kind: str = "disparity"):
        if depth_kind not in DEPTH_KINDS:
            raise DataError(f"{folder}: depth kind {depth_kind!r} (expected one of {DEPTH_KINDS})")
        meta = read_depth_meta(folder)
        if meta is not None and meta["kind"] != depth_kind:
            raise DataError(
                f"{Path(folder) / DEPTH_META}: maps are of kind {meta['kind']!r} (from {meta.get('model')}) but "
                f"data.depth.kind={depth_kind!r}; set data.depth.kind={meta['kind']}"
            )
        self.dataset = dataset
        self.folder = Path(folder)
        self.depth_kind = depth_kind
        self.name = dataset.name

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Sample:
        return self._with_depth(self.dataset[i])

    def draw(self, i: int, rng: np.random.Generator) -> Sample:
        """The wrapped dataset's training read (:func:`.draw.draw_sample`) with its depth map."""
        return self._with_depth(draw_sample(self.dataset, i, rng))

    def _with_depth(self, sample: Sample) -> Sample:
        stem = sample.id.rsplit("/", 1)[-1]
        depth = read_depth(self.folder, stem)
        if depth.shape != sample.image.shape[:2]:
            raise SizeMismatch(
                f"{self.folder / stem}.*: depth size {depth.shape[1]}x{depth.shape[0]} does not match image "
                f"{sample.id} (expected {sample.image.shape[1]}x{sample.image.shape[0]})"
            )
        return dataclasses.replace(sample, depth=depth, depth_kind=self.depth_kind)
