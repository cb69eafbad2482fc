"""Augmentation pipelines that move image, instance masks, depth and click keypoints together.

A :class:`Pipeline` has a photometric part (image only) and a spatial part. In the spatial part the depth map
is an extra ``image`` target, so it is resized and warped with linear interpolation by exactly the same
geometry as the image, while instance masks use nearest neighbour. Masks travel as uint8 (-1 ignore is the
byte 255, so it survives nearest-neighbour resampling) and a ``valid`` mask marks pixels that come from the
source image (False on padding and on areas an affine warp filled in). Padding is anchored top-left, so a
click at (y, x) in the padded frame is the same pixel as in the resized image.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from .base import Sample

Point = tuple[float, float]  # (y, x) in pixels
# Pixel-centre-aligned nearest neighbour for mask resizing: cv2.INTER_NEAREST samples floor(dst / scale),
# which shifts masks by up to half a pixel against the linearly resized image.
EXACT_NEAREST = cv2.INTER_NEAREST_EXACT


@dataclass(frozen=True)
class Pipeline:
    """``photometric`` runs on the image first (so padding stays black), then ``spatial`` on everything."""

    spatial: A.Compose
    photometric: A.Compose | None = None

    def set_seed(self, seed: int) -> None:
        """Reseed both parts (call per DataLoader worker, e.g. with ``torch.initial_seed() % 2**32``)."""
        self.spatial.set_random_seed(seed)
        if self.photometric is not None:
            self.photometric.set_random_seed(seed + 1)


def _spatial(transforms: list[A.BasicTransform]) -> A.Compose:
    return A.Compose(
        transforms,
        additional_targets={"depth": "image", "valid": "mask"},
        keypoint_params=A.KeypointParams(format="yx", remove_invisible=False),
    )


def _longest(input_size: int) -> A.LongestMaxSize:
    return A.LongestMaxSize(max_size=input_size, mask_interpolation=EXACT_NEAREST)


def _pad(input_size: int) -> A.PadIfNeeded:
    return A.PadIfNeeded(
        input_size, input_size, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0
    )


def build_train_transform(input_size: int, scale: tuple[float, float] = (0.75, 1.40)) -> Pipeline:
    """Longest side to ``input_size``, random rescale by a factor in ``scale``, flip, small affine, colour
    jitter, then top-left pad and random crop to exactly ``input_size`` x ``input_size``."""
    spatial = _spatial(
        [
            _longest(input_size),
            A.RandomScale(scale_limit=(scale[0] - 1.0, scale[1] - 1.0), mask_interpolation=EXACT_NEAREST, p=1.0),
            A.HorizontalFlip(p=0.5),
            A.Affine(translate_percent=(-0.03, 0.03), rotate=(-3, 3), border_mode=cv2.BORDER_CONSTANT, p=0.75),
            _pad(input_size),
            A.RandomCrop(input_size, input_size),
        ]
    )
    photometric = A.Compose(
        [
            A.RandomBrightnessContrast(brightness_limit=(-0.25, 0.25), contrast_limit=(-0.15, 0.4), p=0.75),
            A.RGBShift(r_shift_limit=10, g_shift_limit=10, b_shift_limit=10, p=0.75),
        ]
    )
    return Pipeline(spatial, photometric)


def build_eval_transform(input_size: int) -> Pipeline:
    """Longest side to ``input_size`` and top-left pad to ``input_size`` x ``input_size``."""
    return Pipeline(_spatial([_longest(input_size), _pad(input_size)]))


def apply(transform: Pipeline, sample: Sample, keypoints: list[Point] | None = None) -> tuple[Sample, list[Point]]:
    """Transform a sample and (y, x) keypoints together; returns the new Sample (with ``valid``) and the
    keypoints as float (y, x), same order and count (points may fall outside the output)."""
    image = sample.image
    if transform.photometric is not None:
        image = transform.photometric(image=image)["image"]
    height, width = image.shape[:2]
    data = {
        "image": image,
        "valid": np.ones((height, width), np.uint8),
        "keypoints": np.asarray(keypoints or [], np.float32).reshape(-1, 2),
    }
    if len(sample.masks):
        data["masks"] = sample.masks.astype(np.int8, copy=False).view(np.uint8)  # -1 -> 255
    if sample.depth is not None:
        data["depth"] = sample.depth
    out = transform.spatial(**data)
    if len(sample.masks):
        masks = np.ascontiguousarray(out["masks"], np.uint8).view(np.int8)
    else:
        masks = np.zeros((0, *out["image"].shape[:2]), np.int8)
    new = dataclasses.replace(
        sample, image=out["image"], masks=masks, depth=out.get("depth"), valid=out["valid"].astype(bool)
    )
    return new, [(float(y), float(x)) for y, x in out["keypoints"]]
