"""Click simulation for training and evaluation (paper Sec. 4.1 and Appendix A.1).

OIS uses the click protocol of the isegm lineage (RITM, SimpleClick, SegNext) unchanged; the rules below are
implemented from the protocol facts in ``../shared/notes/protocol.md``:

* evaluation: :class:`Clicker` puts each click at the centre (exact-EDT maximum) of the largest error;
* training: :func:`sample_initial_clicks` (the "multi-point sampler") draws the initial clicks and
  :func:`next_training_click` adds clicks from the model's own predictions.

Ground-truth masks are (H,W) integer arrays: 1 object, 0 background, ``IGNORE`` (-1) excluded everywhere.
Coordinates are integer ``(y, x)`` in the resolution of the mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from ..config.schema import THRESHOLD

IGNORE = -1  # same value as ois_lightning.data.base.IGNORE (not imported: this module needs no torch)

NEG_SOURCE_PROBS = (0.1, 0.4, 0.5)  # negatives from background / other objects / border band
COUNT_DECAY = 0.8  # P(i extra clicks) is proportional to COUNT_DECAY**i
EROSION_ITERS = 3  # positives come from the object eroded 3 times by a 3x3 kernel ...
MIN_ERODED_PX = 10  # ... when more than this many pixels remain
BAND_RATIO = 0.1  # border band width = ceil(BAND_RATIO * sqrt(object area))


@dataclass(frozen=True)
class Click:
    """One click at integer pixel ``(y, x)``; ``positive`` marks the object, negative the background."""

    y: int
    x: int
    positive: bool


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Generator for one training sample: its clicks depend on (seed, epoch, index) only, not on the number of
    dataloader workers or ranks."""
    return np.random.default_rng([seed, epoch, index])


def iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """IoU of the object ``gt == 1`` and the bool ``pred`` over non-ignored pixels; 1.0 when both are empty.

    This is the per-click IoU of the isegm evaluation protocol (ignore pixels excluded everywhere).
    """
    valid = gt != IGNORE  # H,W
    obj = gt == 1
    union = np.count_nonzero((obj | pred) & valid)
    if union == 0:
        return 1.0
    return np.count_nonzero(obj & pred) / union  # obj already excludes ignore


def _padded_distance(mask: np.ndarray, mask_size: int) -> np.ndarray:
    """Distance transform of the bool (H,W) ``mask`` with the image border counting as outside.

    The mask is padded with a 1-px border of zeros, transformed and cropped back to (H,W). ``mask_size`` is
    ``cv2.DIST_MASK_PRECISE`` (the exact EDT of the evaluation rule) or 5 (the 5x5 chamfer of the training rule),
    as in the isegm protocol (isegm ``inference/clicker.py``: ``cv2.distanceTransform(DIST_L2, 0)``).

    The exact EDT is computed from integer squared distances (``scipy.ndimage.distance_transform_edt``,
    float64): equal distances are equal bit for bit, so the "first maximum" of the rule is decided by the
    distances alone. cv2's float32 EDT differed in its last bits (about 1e-6) between processes (every run
    agreed with address randomisation off), which broke the ties of equidistant centres differently from run to
    run: one checkpoint evaluated three times gave three NoC90s. Otherwise the two agree to float32 rounding
    (``tests/test_clicks.py``).
    """
    if mask_size == cv2.DIST_MASK_PRECISE:
        return _exact_distance(mask)
    padded = np.pad(mask.astype(np.uint8), 1)  # H+2,W+2
    return cv2.distanceTransform(padded, cv2.DIST_L2, mask_size)[1:-1, 1:-1]


def _exact_distance(mask: np.ndarray) -> np.ndarray:
    """Exact EDT (float64) of the bool (H,W) ``mask``, outside the image counting as 0, computed on the mask's
    bounding box with a 1-px zero ring only: the nearest zero of any pixel is never farther than that ring."""
    dist = np.zeros(mask.shape)  # H,W
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size:
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        dist[box] = ndimage.distance_transform_edt(np.pad(mask[box], 1))[1:-1, 1:-1]
    return dist


def _largest_error(fn: np.ndarray, fp: np.ndarray, clicked: np.ndarray, mask_size: int
                   ) -> tuple[bool, np.ndarray]:
    """Shared core of the evaluation and training rules: -> (positive, distance map of the chosen error).

    Both bool (H,W) error masks are distance-transformed (:func:`_padded_distance`), already ``clicked``
    pixels are zeroed in both maps, and the click is positive iff ``max(fn_dist) > max(fp_dist)`` (strict:
    a tie gives a negative click). The returned map is all zero when no unclicked error pixel is left.
    """
    fn_dist = _padded_distance(fn, mask_size)  # H,W
    fp_dist = _padded_distance(fp, mask_size)  # H,W
    fn_dist[clicked] = 0
    fp_dist[clicked] = 0
    positive = bool(fn_dist.max() > fp_dist.max())
    return positive, fn_dist if positive else fp_dist


def _check_shape(gt: np.ndarray, other: np.ndarray, name: str) -> None:
    """ValueError unless ``gt`` is (H,W) and ``other`` has the same shape."""
    if gt.ndim != 2 or other.shape != gt.shape:
        raise ValueError(f"gt must be (H,W) and {name} the same shape; got gt {gt.shape}, {name} {other.shape}")


class Clicker:
    """Evaluation click simulator for one object in one image (App. A.1; isegm protocol notes).

    Each :meth:`next_click` puts the click at the centre of the largest error of the current prediction and
    records it in :attr:`clicks`; :meth:`add` records an externally chosen click.
    """

    def __init__(self, gt: np.ndarray) -> None:
        if gt.ndim != 2:
            raise ValueError(f"gt must be an (H,W) array, got shape {gt.shape}")
        self.gt = gt  # H,W int: 1 object, 0 background, -1 ignore
        self.clicks: list[Click] = []
        self._clicked = np.zeros(gt.shape, dtype=bool)  # H,W

    def add(self, click: Click) -> None:
        """Record ``click``; ValueError if it is outside the image or its pixel was already clicked."""
        h, w = self.gt.shape
        if not (0 <= click.y < h and 0 <= click.x < w):
            raise ValueError(f"click (y={click.y}, x={click.x}) is outside the {h}x{w} image")
        if self._clicked[click.y, click.x]:
            raise ValueError(f"pixel (y={click.y}, x={click.x}) was already clicked")
        self._clicked[click.y, click.x] = True
        self.clicks.append(click)

    def next_click(self, pred: np.ndarray) -> Click:
        """Next evaluation click for the bool (H,W) prediction ``pred``, recorded before it is returned.

        Rule (isegm protocol notes): ``fn = gt==1 & ~pred``, ``fp = gt==0 & pred`` (ignore pixels excluded),
        exact EDT on the 1-px zero-padded masks, clicked pixels zeroed, positive iff the fn maximum is
        strictly larger, the click at the first maximum of the chosen map in row-major order.

        With no error left the reference returns a negative click at (0, 0). Here that click goes to the
        first pixel in row-major order that is neither ignored nor already clicked, which is (0, 0) unless
        (0, 0) is ignored or was clicked: the never-twice and never-on-ignore guarantees hold in every case.
        """
        _check_shape(self.gt, pred, "pred")
        fn = (self.gt == 1) & ~pred  # H,W; gt == 1 and gt == 0 already exclude ignore pixels
        fp = (self.gt == 0) & pred
        positive, dist = _largest_error(fn, fp, self._clicked, cv2.DIST_MASK_PRECISE)
        if dist.max() > 0:
            flat = int(np.argmax(dist))  # first maximum, row-major
        else:
            free = np.flatnonzero((self.gt != IGNORE) & ~self._clicked)
            if free.size == 0:
                raise RuntimeError("no pixel left to click: every non-ignored pixel was already clicked")
            flat = int(free[0])
        y, x = divmod(flat, self.gt.shape[1])
        click = Click(y, x, positive)
        self.add(click)
        return click


def _decaying_count(rng: np.random.Generator, n_max: int) -> int:
    """Draw i in 0..n_max with P(i) proportional to 0.8**i (multi-point sampler, isegm protocol notes)."""
    weights = COUNT_DECAY ** np.arange(n_max + 1)
    return int(rng.choice(n_max + 1, p=weights / weights.sum()))


@dataclass(frozen=True)
class _Pool:
    """Pixels a training click may be drawn from: a flattened bool mask and its flat indices."""

    mask: np.ndarray  # H*W bool
    idx: np.ndarray  # P int64, the True positions of mask

    @classmethod
    def of(cls, mask: np.ndarray) -> _Pool:
        flat = mask.ravel()
        return cls(flat, np.flatnonzero(flat))

    def has_free(self, taken: set[int]) -> bool:
        """True if some pixel of the pool is not in ``taken`` (flat indices)."""
        return self.idx.size > sum(int(self.mask[t]) for t in taken)

    def draw(self, rng: np.random.Generator, taken: set[int]) -> int:
        """Uniform flat index of the pool outside ``taken``; call only if :meth:`has_free`.

        Rejection sampling: at most 48 pixels are ever taken, so this stays cheap on megapixel masks.
        """
        while True:
            idx = int(self.idx[rng.integers(self.idx.size)])
            if idx not in taken:
                return idx


def sample_initial_clicks(gt: np.ndarray, rng: np.random.Generator, other_objects: np.ndarray | None = None,
                          max_pos: int = 24, max_neg: int = 24) -> list[Click]:
    """Initial training clicks of the multi-point sampler (App. A.1; isegm protocol notes), positives first.

    * 1 + k positives, k in 0..max_pos-1, uniform inside the object eroded 3 times by a 3x3 kernel if more
      than 10 px remain, else inside the whole object;
    * j negatives, j in 0..max_neg; each comes from the background (p 0.1), the ``other_objects`` bool (H,W)
      mask (p 0.4) or the border band = object dilated by ceil(0.1*sqrt(area)) minus the object (p 0.5).
      Sources without a free pixel are dropped and the others' probabilities renormalised.

    k and j have P(i) proportional to 0.8**i. The band dilation is a 3x3 cross applied ceil(...) times
    (city-block radius). No pixel is drawn twice and ignore pixels never; fewer clicks are returned when
    the pools run out. Skipping small objects and merging objects are the dataset's job, not done here.

    An empty target (no ``gt == 1`` pixel; isegm ``keep_background_prob``) gets no positive click and its j
    negatives from the pixels of no object (background outside ``other_objects``) whatever the source, as
    isegm's ``MultiPointSampler.sample_object`` sets every source to the background mask of an empty sample.
    """
    obj = gt == 1  # H,W
    area = int(np.count_nonzero(obj))
    background = gt == 0  # ignore and object excluded
    if other_objects is None:
        other_objects = np.zeros(gt.shape, dtype=bool)
    _check_shape(gt, other_objects, "other_objects")
    others = background & other_objects.astype(bool)
    obj_u8 = obj.astype(np.uint8)
    eroded = cv2.erode(obj_u8, np.ones((3, 3), np.uint8), iterations=EROSION_ITERS).astype(bool)
    pos_pool = _Pool.of(eroded if np.count_nonzero(eroded) > MIN_ERODED_PX else obj)
    if area == 0:
        neg_pools = [_Pool.of(background & ~others)] * len(NEG_SOURCE_PROBS)
    else:
        radius = math.ceil(BAND_RATIO * math.sqrt(area))
        cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        band = cv2.dilate(obj_u8, cross, iterations=radius).astype(bool) & background
        neg_pools = [_Pool.of(m) for m in (background, others, band)]

    width = gt.shape[1]
    taken: set[int] = set()
    clicks: list[Click] = []

    def take(idx: int, positive: bool) -> None:
        taken.add(idx)
        clicks.append(Click(*divmod(idx, width), positive))

    for _ in range(1 + _decaying_count(rng, max_pos - 1)):
        if not pos_pool.has_free(taken):
            break
        take(pos_pool.draw(rng, taken), True)
    for _ in range(_decaying_count(rng, max_neg)):
        probs = np.array([p if pool.has_free(taken) else 0.0 for p, pool in zip(NEG_SOURCE_PROBS, neg_pools)])
        if probs.sum() == 0:
            break
        pool = neg_pools[rng.choice(len(neg_pools), p=probs / probs.sum())]
        take(pool.draw(rng, taken), False)
    return clicks


def next_training_click(gt: np.ndarray, prob: np.ndarray, rng: np.random.Generator,
                        clicked: set[tuple[int, int]] | None = None, threshold: float = THRESHOLD) -> Click | None:
    """Next click of iterative training from the (H,W) probability map ``prob`` (isegm protocol notes).

    ``fn = gt==1 & prob < threshold``, ``fp = gt==0 & prob > threshold`` (ignore excluded), 5x5 chamfer
    distance transform on the 1-px zero-padded masks, positive iff the fn maximum is strictly larger; the
    click is a uniformly random pixel of the chosen map whose distance exceeds half its maximum. Pixels in
    ``clicked`` ((y, x) pairs) are zeroed in both maps, so they are never clicked again. None if no error.
    """
    _check_shape(gt, prob, "prob")
    clicked_mask = np.zeros(gt.shape, dtype=bool)  # H,W
    for y, x in clicked or ():
        clicked_mask[y, x] = True
    positive, dist = _largest_error((gt == 1) & (prob < threshold), (gt == 0) & (prob > threshold),
                                    clicked_mask, 5)
    peak = dist.max()
    if peak == 0:
        return None
    candidates = np.flatnonzero(dist > peak / 2)
    y, x = divmod(int(rng.choice(candidates)), gt.shape[1])
    return Click(y, x, positive)
