"""Checks of what a user hands to :class:`~ois_lightning.protocol.predictor.Predictor`: each bad input is one ValueError
line saying what was expected."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .clicks import Click


def check_image(image: object) -> np.ndarray:
    """An (H,W,3) uint8 RGB array (C-contiguous copy if needed)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected an (H,W,3) uint8 RGB array, got {describe(image)}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image: empty, shape {image.shape}")
    return np.ascontiguousarray(image)


def depth_advice(kind: str, can_predict: bool) -> str:
    """One line on how to give depth to a model that reads it from data (``data.depth.source`` file or gt) of
    convention ``kind``; ``can_predict``: the model has a depth head or depth model that can stand in."""
    how = f"pass set_image(image, depth=D) with D an (H,W) {kind} map (data.depth.kind)"
    if not can_predict:
        return f"{how}; the model has no depth head or depth model to predict it"
    return (f"{how}, or load it with Predictor.from_checkpoint(ckpt, overrides=['data.depth.source=model']) to let "
            "its own depth head (or data.depth.model) predict depth, which is not the depth it was trained with")


def check_depth(depth: object, size: tuple[int, int], advice: str) -> np.ndarray:
    """An (H,W) finite real depth map of the image's size, as float32; None is an error ending in ``advice``
    (:func:`depth_advice`)."""
    if depth is None:
        raise ValueError(f"depth: this model reads depth from data (data.depth.source file or gt): {advice}")
    if not isinstance(depth, np.ndarray) or depth.shape != size or not np.issubdtype(depth.dtype, np.number):
        raise ValueError(f"depth: expected a real ({size[0]},{size[1]}) array (the image's size), "
                         f"got {describe(depth)}")
    if not np.isfinite(depth).all():
        raise ValueError("depth: holds NaN or infinite values")
    return np.ascontiguousarray(depth, np.float32)


def check_clicks(points: object, labels: object, size: tuple[int, int], xy: bool = False) -> list[Click]:
    """``points`` (K,2) (y, x) inside the (H,W) image (rounded to the nearest pixel) and ``labels`` (K,) of 1
    positive / 0 negative, K >= 1 -> the clicks in order. ``xy``: SAM's ``point_coords`` / ``point_labels``,
    points in (x, y) order (the errors name those keywords)."""
    names, order = (("point_coords", "point_labels"), "(x, y)") if xy else (("points", "labels"), "(y, x)")
    pts = np.asarray(points, dtype=np.float64) if _numeric(points) else None
    if pts is None or pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0 or not np.isfinite(pts).all():
        raise ValueError(f"{names[0]}: expected a (K,2) array of {order} pixels with K >= 1, got {describe(points)}")
    lab = np.asarray(labels) if _numeric(labels) else None
    if lab is None or lab.shape != (len(pts),) or not np.isin(lab, (0, 1)).all():
        raise ValueError(f"{names[1]}: expected a ({len(pts)},) array of 1 (positive) / 0 (negative), "
                         f"got {describe(labels)}")
    yx = np.rint(pts[:, ::-1] if xy else pts).astype(np.int64)  # K,2 (y, x)
    h, w = size
    outside = (yx[:, 0] < 0) | (yx[:, 0] >= h) | (yx[:, 1] < 0) | (yx[:, 1] >= w)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{names[0]}: click {k} at {order} = ({pts[k, 0]:g}, {pts[k, 1]:g}) lies outside the "
                         f"image (height {h}, width {w}: 0 <= y < {h}, 0 <= x < {w} after rounding)")
    return [Click(int(y), int(x), bool(p)) for (y, x), p in zip(yx, lab)]


def check_prev_mask(prev_mask: object, size: tuple[int, int]) -> np.ndarray | None:
    """None, or a bool (H,W) mask of the image's size."""
    if prev_mask is None:
        return None
    if not isinstance(prev_mask, np.ndarray) or prev_mask.dtype != bool or prev_mask.shape != size:
        raise ValueError(f"prev_mask: expected None or a bool ({size[0]},{size[1]}) array (the image's size), "
                         f"got {describe(prev_mask)}")
    return prev_mask


def click_arrays(clicks: Sequence[Click]) -> tuple[np.ndarray, np.ndarray]:
    """:class:`Click` list (the :class:`~ois_lightning.protocol.clicks.Clicker`'s) -> points (K,2) int64 (y, x) and
    labels (K,) int64, 1 positive / 0 negative."""
    points = np.array([(c.y, c.x) for c in clicks], dtype=np.int64).reshape(-1, 2)
    return points, np.array([int(c.positive) for c in clicks], dtype=np.int64)


def _numeric(x: object) -> bool:
    try:
        return np.issubdtype(np.asarray(x).dtype, np.number) or np.asarray(x).dtype == bool
    except (ValueError, TypeError):  # ragged lists
        return False


def describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return type(x).__name__
