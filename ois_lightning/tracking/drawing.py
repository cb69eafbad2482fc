"""The images the trackers show, drawn with OpenCV (no W&B here): clicks on an image, the first click's order map."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..protocol.clicks import Click
from ..protocol.predictor import Predictor


POSITIVE, NEGATIVE, RIM = (0, 255, 0), (255, 0, 0), (255, 255, 255)  # click colours of demo.py's figure (RGB)


def draw_clicks(image: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
    """A copy of the (H,W,3) uint8 image with the clicks as dots: green positive, red negative, white rim."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    radius = max(3, round(min(out.shape[:2]) / 80))
    for c in clicks:
        cv2.circle(out, (int(c.x), int(c.y)), radius + 1, RIM, -1, cv2.LINE_AA)
        cv2.circle(out, (int(c.x), int(c.y)), radius, POSITIVE if c.positive else NEGATIVE, -1, cv2.LINE_AA)
    return out


def first_click_order_map(predictor: Predictor, click: Click) -> np.ndarray | None:
    """(H,W) order map (Eq. 1-2) the model computes for the first click on the image set in ``predictor``, in
    the original frame (:meth:`Predictor.order_map` with the model's click types); None when the model uses no
    order (w/o order ablations, no depth)."""
    mode = predictor.model.order_mode
    if predictor.enc is None or predictor.enc.depth is None or mode is None:
        return None
    maps = predictor.order_map(np.array([[click.y, click.x]]), np.array([int(click.positive)]), mode)
    return maps["positive"] if click.positive else maps["negatives"][0]


def order_map_image(order_map: np.ndarray) -> np.ndarray:
    """(H,W) order map in [0,1] -> (H,W,3) uint8 RGB, viridis (dark = same depth as the click)."""
    return cv2.applyColorMap((255 * np.clip(order_map, 0, 1)).astype(np.uint8), cv2.COLORMAP_VIRIDIS)[..., ::-1]
