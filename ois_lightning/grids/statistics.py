"""The statistics of ``ois table``: a run's metrics, per-object values, and the paired bootstrap of a delta.

Bootstrap (two levels, so that the interval holds both sources of variation): each replicate draws, for the
row and for its reference independently, the seeds with replacement (as many as the row has) and averages
each object's metric value (NoC of that object, its IoU after k clicks, or whether it failed) over the drawn
seeds; then it draws objects with replacement, the same objects for both rows (paired by object id, objects
present in every seed of both), and recomputes the delta statistic (mean over objects; sum for the NoF counts).
``n_boot`` replicates with the RNG seeded by ``rng_seed`` (the table is reproducible); the interval is the
2.5-97.5 percentile range. With one seed per row it is the paired bootstrap over objects; with few seeds the
seed level is coarse (two seeds give three possible means); more seeds make it more trustworthy.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..protocol.metrics import summarize_ious
from ..protocol.results import ResultsError, RunResult


def metric_aggregate(metric: str) -> Any:
    """How per-object values combine into the table's number: NoF is a count of objects, the rest are means."""
    return np.sum if metric.startswith("NoF") else np.mean


def run_metrics(run: RunResult, metrics: Sequence[str]) -> dict[str, float]:
    """The table's metrics of one run; :class:`ResultsError` for one its early-stopped curves leave undetermined."""
    summary = summarize_ious(run.ious, run.max_clicks)
    missing = [m for m in metrics if summary[m] is None]
    if missing:
        raise ResultsError(f"{run.path}: {', '.join(missing)} undetermined: objects stopped early "
                           "(clicks.target_iou); re-evaluate with clicks.target_iou=null, or a target and "
                           "clicks.min_eval that cover the table's metrics")
    return {m: float(summary[m]) for m in metrics}


def per_object_metrics(run: RunResult, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """(N,) value of every metric per object: the metric of the single-object set, so definitions stay in
    ois_lightning.protocol.metrics; aggregating them with :func:`metric_aggregate` gives :func:`run_metrics`."""
    single = [summarize_ious([curve], run.max_clicks) for curve in run.ious]
    return {m: np.array([s[m] for s in single], dtype=float) for m in metrics}


def bootstrap_ci(row: np.ndarray, ref: np.ndarray, aggregate: Any, n_boot: int, rng_seed: int,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of aggregate(row) - aggregate(ref) under the two-level bootstrap of the module
    docstring. row (S,N), ref (S',N): per-seed values of the same N objects in the same order."""
    rng = np.random.default_rng(rng_seed)
    n = row.shape[1]
    objects = rng.integers(0, n, size=(n_boot, n))  # B,N; the same objects for both rows (paired)
    stats = np.zeros(n_boot)
    for sign, values in ((1.0, row), (-1.0, ref)):
        seeds = rng.integers(0, values.shape[0], size=(n_boot, values.shape[0]))  # B,S
        per_object = values[seeds].mean(axis=1)  # B,N: each object averaged over the drawn seeds
        stats += sign * aggregate(np.take_along_axis(per_object, objects, axis=1), axis=1)
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
