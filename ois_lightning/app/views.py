"""What the page shows, as PNG bytes / data URLs: the mask overlay, the depth map and the order maps."""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from .session import Session

OVERLAY_RGBA = (30, 144, 255, 255)  # the current mask's colour (the page's opacity slider blends it)
OBJECT_COLOURS = [(255, 127, 14, 255), (44, 160, 44, 255), (214, 39, 40, 255), (148, 103, 189, 255),
                  (140, 86, 75, 255), (227, 119, 194, 255), (188, 189, 34, 255), (23, 190, 207, 255)]  # finished
DEPTH_CMAP, ORDER_CMAP = "magma", "viridis"


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 HxW (L), HxWx3 (RGB) or HxWx4 (RGBA) -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)  # fast: the page is local
    return buf.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def mask_png(mask: np.ndarray) -> bytes:
    """The saved mask: 8-bit grey, 255 object, 0 background."""
    return png_bytes(mask.astype(np.uint8) * 255)


def overlay_png(mask: np.ndarray) -> bytes:
    """Transparent everywhere but the mask, which gets :data:`OVERLAY_RGBA`."""
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask] = OVERLAY_RGBA
    return png_bytes(rgba)


def objects_png(masks: list[np.ndarray], shape: tuple[int, int]) -> bytes:
    """The finished objects, each in its own colour of :data:`OBJECT_COLOURS` (later over earlier)."""
    rgba = np.zeros((*shape, 4), np.uint8)
    for k, mask in enumerate(masks):
        rgba[mask] = OBJECT_COLOURS[k % len(OBJECT_COLOURS)]
    return png_bytes(rgba)


def heatmap(values: np.ndarray, cmap: str, label: str) -> dict:
    """A float map scaled to its own [min, max] and coloured with a matplotlib colormap, with its legend:
    ``{"label", "png" (data URL), "cmap", "lo", "hi"}`` (the page draws the colour bar from ``cmap``)."""
    from matplotlib import colormaps

    v = np.nan_to_num(np.asarray(values, np.float32))
    lo, hi = float(v.min()), float(v.max())
    scaled = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    png = png_bytes((colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8))
    return {"label": label, "png": data_url(png), "cmap": cmap, "lo": round(lo, 3), "hi": round(hi, 3)}


def colour_stops(cmap: str, n: int = 9) -> list[str]:
    """``n`` CSS colours evenly along a matplotlib colormap: the page's colour bar for ``cmap``."""
    from matplotlib import colormaps

    return ["#%02x%02x%02x" % tuple(int(c * 255) for c in colormaps[cmap](i / (n - 1))[:3]) for i in range(n)]


def order_views(order: dict) -> tuple[dict | None, list[dict]]:
    """The depth map and the order maps (positive, then each negative) of ``Predictor.order_map``."""
    depth = order.get("depth")
    maps = [("positive", order.get("positive"))]
    maps += [(f"negative {i + 1}", m) for i, m in enumerate(order.get("negatives") or [])]
    return (None if depth is None else heatmap(depth, DEPTH_CMAP, "depth (1 = nearest)"),
            [heatmap(m, ORDER_CMAP, label) for label, m in maps if m is not None])


def state_json(session: Session) -> dict:
    """Everything the page needs after a request (the overlay and maps only once there is a click)."""
    step = session.current
    state: dict = {"name": session.name, "threshold": session.threshold, "clicks": [], "mask_pixels": 0,
                   "latency_ms": None, "overlay": None, "depth": None, "order": [],
                   "size": None if session.image is None else list(session.image.shape[:2]),
                   "original_size": None if session.original is None else list(session.original),
                   "model": session.model.info(), "objects": len(session.objects),
                   "legends": {cmap: colour_stops(cmap) for cmap in (DEPTH_CMAP, ORDER_CMAP)}}
    if session.objects and session.objects_view is None:
        session.objects_view = data_url(objects_png(session.objects, session.objects[0].shape))
    state["objects_overlay"] = session.objects_view if session.objects else None
    if step is not None:
        if step.views is None:
            depth, order = order_views(step.order)
            step.views = {"overlay": data_url(overlay_png(step.mask)), "depth": depth, "order": order}
        state |= {"clicks": [{"y": y, "x": x, "positive": bool(lab)} for (y, x), lab in zip(step.points, step.labels)],
                  "mask_pixels": int(step.mask.sum()), "latency_ms": round(step.latency_ms, 1), **step.views}
    return state
