"""Interactive-segmentation metrics of the paper's tables: NoC@t, NoF@t, k-mIoU (Tables 1-2) and SPC (Table 3).

Definitions follow the isegm protocol notes (``../shared/notes/protocol.md``). Inputs are per-object IoU
curves: ``per_object_ious[i][c]`` is the IoU of object i after click c + 1.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def noc_per_object(ious: Sequence[Sequence[float]], threshold: float, max_clicks: int = 20) -> np.ndarray:
    """(N,) int NoC@threshold per object: 1-based index of the first click with IoU >= threshold among the
    first ``max_clicks``, else ``max_clicks``. Curves may be shorter (early stop)."""
    nocs = []
    for curve in ious:
        hits = np.flatnonzero(np.asarray(curve[:max_clicks], dtype=float) >= threshold)
        nocs.append(hits[0] + 1 if hits.size else max_clicks)
    return np.asarray(nocs, dtype=int)


def _leading_ious(per_object_ious: Sequence[Sequence[float]], k: int) -> np.ndarray:
    """(N,k) IoUs after clicks 1..k; ValueError if there is no object or a curve has fewer than k values."""
    if len(per_object_ious) == 0:
        raise ValueError("no objects")
    for i, curve in enumerate(per_object_ious):
        if len(curve) < k:
            raise ValueError(f"object {i} has {len(curve)} IoU values, need at least {k} "
                             f"(run every object to {k} clicks without early stopping)")
    return np.array([curve[:k] for curve in per_object_ious], dtype=float)


def miou_curve(per_object_ious: Sequence[Sequence[float]], max_clicks: int = 20) -> np.ndarray:
    """(max_clicks,) mean IoU (0..1) over objects after 1..max_clicks clicks; shorter curves are an error."""
    return _leading_ious(per_object_ious, max_clicks).mean(axis=0)


def noc_determined(ious: Sequence[Sequence[float]], threshold: float, max_clicks: int = 20) -> bool:
    """Whether NoC@threshold is known for every object: its curve reaches ``threshold`` or runs all
    ``max_clicks`` clicks. An object stopped early at a lower target IoU (isegm early stop) leaves it open."""
    return all(len(c) >= max_clicks or max(c, default=0.0) >= threshold for c in ious)


def summarize_ious(per_object_ious: Sequence[Sequence[float]], max_clicks: int = 20,
                   thresholds: Sequence[float] = (0.85, 0.90, 0.95), miou_at: Sequence[int] = (1, 5)) -> dict:
    """Paper-table metrics from per-object IoU curves.

    Keys, for t in ``thresholds`` written as a percentage (85, 90, 95) and k in ``miou_at``:
    ``NoC{t}`` (mean over objects, in clicks), ``NoC{t}_std`` (population std), ``NoF{t}`` (objects whose
    NoC equals ``max_clicks``, so reaching t exactly at the last click counts as a failure, as in the
    reference), ``{k}-mIoU`` (mean IoU after k clicks in percent, 0..100), ``num_objects`` and
    ``clicks_per_object`` (mean curve length). With early-stopped (shorter) curves a metric the curves do not
    determine is None: NoC/NoF at a threshold some stopped object never reached (see :func:`noc_determined`),
    k-mIoU beyond the shortest curve.
    """
    if len(per_object_ious) == 0:
        raise ValueError("summarize_ious needs at least one object")
    out: dict = {"num_objects": len(per_object_ious),
                 "clicks_per_object": float(np.mean([min(len(c), max_clicks) for c in per_object_ious]))}
    for t in thresholds:
        name = f"{round(100 * t)}"
        if not noc_determined(per_object_ious, t, max_clicks):
            out.update({f"NoC{name}": None, f"NoC{name}_std": None, f"NoF{name}": None})
            continue
        noc = noc_per_object(per_object_ious, t, max_clicks)
        out[f"NoC{name}"] = float(noc.mean())
        out[f"NoC{name}_std"] = float(noc.std())
        out[f"NoF{name}"] = int(np.count_nonzero(noc == max_clicks))
    shortest = min(len(c) for c in per_object_ious)
    for k in miou_at:
        out[f"{k}-mIoU"] = 100.0 * float(_leading_ious(per_object_ious, k)[:, k - 1].mean()) if k <= shortest else None
    return out


def format_metric(value: float | int | None) -> str:
    """A summary value as printed: floats with 2 decimals, counts as integers, "n/a" for a metric an early stop
    left undetermined (None)."""
    if value is None:
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def summarize_timing(total_seconds: float, encoder_seconds: float, click_seconds: float, num_clicks: int,
                     num_images: int) -> dict:
    """Efficiency numbers (Table 3): ``SPC`` = wall-clock seconds of the whole evaluation loop per simulated
    click, plus ``encoder_s_per_image`` and ``click_s_per_click`` (the part after the image encoder)."""
    if num_clicks <= 0 or num_images <= 0:
        raise ValueError(f"need positive counts, got num_clicks={num_clicks}, num_images={num_images}")
    return {
        "SPC": total_seconds / num_clicks,
        "encoder_s_per_image": encoder_seconds / num_images,
        "click_s_per_click": click_seconds / num_clicks,
    }


# Metric names (keys of summarize_ious) a table may list, with the better direction.
METRIC_GOALS: dict[str, str] = {
    "NoC85": "lower", "NoC90": "lower", "NoC95": "lower",
    "NoF85": "lower", "NoF90": "lower", "NoF95": "lower",
    "1-mIoU": "higher", "5-mIoU": "higher",
}
