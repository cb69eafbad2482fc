"""The isegm ZoomIn rule (RITM, SimpleClick): which crop of the image the model sees from the 2nd click on.

Facts from ``SamsungLabs/ritm_interactive_segmentation`` / ``uncbiag/SimpleClick``,
``isegm/inference/transforms/zoom_in.py`` (``ZoomIn.transform``, ``get_object_roi``, ``check_object_roi``) and
``isegm/utils/misc.py`` (``get_bbox_from_mask``, ``expand_bbox``, ``clamp_bbox``, ``get_bbox_iou``):

* the object box is the bounding box of the previous probability map > 0.5 with every positive click's pixel
  added, expanded 1.4x about its centre, each side at least 200 px, clamped to the image (clamping shrinks, it
  does not shift); no box while that map is empty;
* the crop is recomputed only when there is none yet, a positive click lies outside it (half-open at the
  max side: ``rmin <= y < rmax``) or the new box's IoU with it is below 0.5 (IoU of boxes = product of the
  row- and column-interval IoUs);
* the first click (``skip_clicks=1``, RITM's default) sees the full image;
* after an empty prediction there is no new box: ``transform`` hands the model the full image and the clicks
  unchanged, but a crop chosen earlier stays the object ROI, so ``inv_transform`` resizes the full image's
  probabilities into that ROI's box and pastes them into a zero map (:class:`View` ``squashed``).

The geometry of a crop in the model input is :class:`~ois_lightning.protocol.geometry.Crop`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .clicks import Click

EXPANSION_RATIO = 1.4
MIN_CROP_SIZE = 200  # px of the original image
RECOMPUTE_IOU = 0.5
PROB_THRESH = 0.5  # ZoomIn's own threshold on the previous probabilities (the protocol's 0.49 is not passed in)
SKIP_CLICKS = 1  # clicks seen on the full image before zooming in


@dataclass(frozen=True)
class Box:
    """Inclusive pixel box ``rmin..rmax`` x ``cmin..cmax`` of the original image."""

    rmin: int
    rmax: int
    cmin: int
    cmax: int

    @property
    def height(self) -> int:
        return self.rmax - self.rmin + 1

    @property
    def width(self) -> int:
        return self.cmax - self.cmin + 1


def mask_box(mask: np.ndarray) -> Box:
    """Bounding box of the True pixels of a non-empty bool (H,W) mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return Box(int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]))


def expand(box: Box, ratio: float, min_size: int) -> Box:
    """Scale each side about the box centre by ``ratio``, at least ``min_size``; ends rounded (Python ``round``,
    half to even, as the reference)."""
    rc, cc = 0.5 * (box.rmin + box.rmax), 0.5 * (box.cmin + box.cmax)
    h, w = max(ratio * box.height, min_size), max(ratio * box.width, min_size)
    return Box(int(round(rc - 0.5 * h)), int(round(rc + 0.5 * h)), int(round(cc - 0.5 * w)), int(round(cc + 0.5 * w)))


def clamp(box: Box, height: int, width: int) -> Box:
    """``box`` cut to the (height, width) image."""
    return Box(max(0, box.rmin), min(height - 1, box.rmax), max(0, box.cmin), min(width - 1, box.cmax))


def _interval_iou(a0: int, a1: int, b0: int, b1: int) -> float:
    inter = max(0, min(a1, b1) - max(a0, b0) + 1)
    return inter / max(1e-6, max(a1, b1) - min(a0, b0) + 1)


def box_iou(a: Box, b: Box) -> float:
    """Row-interval IoU times column-interval IoU (inclusive ends)."""
    return _interval_iou(a.rmin, a.rmax, b.rmin, b.rmax) * _interval_iou(a.cmin, a.cmax, b.cmin, b.cmax)


def holds_positives(box: Box, clicks: Sequence[Click]) -> bool:
    """Every positive click inside ``box``, half-open at the max side as the reference checks it."""
    return all(box.rmin <= c.y < box.rmax and box.cmin <= c.x < box.cmax for c in clicks if c.positive)


def object_box(prob: np.ndarray, clicks: Sequence[Click]) -> Box | None:
    """The crop the (H,W) previous probabilities and the clicks ask for; None while ``prob`` has no object."""
    mask = prob > PROB_THRESH
    if not mask.any():
        return None
    for c in clicks:
        if c.positive:
            mask[c.y, c.x] = True
    return clamp(expand(mask_box(mask), EXPANSION_RATIO, MIN_CROP_SIZE), *mask.shape)


@dataclass(frozen=True)
class View:
    """What the model sees in one round: the full image (``box`` None), the crop ``box``, or (``squashed``) the
    full image, its probabilities resized into ``box`` and pasted into a zero map (see the module notes)."""

    box: Box | None = None
    squashed: bool = False


class ZoomIn:
    """The crop of one object's click rounds: :meth:`update` before each round; ``box`` None is the full image."""

    def __init__(self) -> None:
        self.box: Box | None = None

    def update(self, clicks: Sequence[Click], prev_prob: np.ndarray | None) -> View:
        """Apply the rule for the round with ``clicks`` (all so far) after the (H,W) probabilities
        ``prev_prob`` of the previous round (None in round 1) -> the :class:`View` of this round.

        The first click resets to the full image. After an empty previous prediction the model sees the full
        image, squashed into the current crop's box if there is one, and that crop stays (as the reference).
        """
        if len(clicks) <= SKIP_CLICKS or prev_prob is None:
            self.box = None
            return View()
        new = object_box(prev_prob, clicks)
        if new is None:
            return View(self.box, squashed=self.box is not None)
        if self.box is None or not holds_positives(self.box, clicks) or box_iou(new, self.box) < RECOMPUTE_IOU:
            self.box = new
        return View(self.box)
