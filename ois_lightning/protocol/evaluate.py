"""The isegm evaluation protocol for OIS (paper Sec. 4.1, App. A.1; ``../shared/notes/protocol.md``).

:class:`~ois_lightning.protocol.predictor.Predictor` wraps an :class:`~ois_lightning.model.OISModel` for one image under
the configured protocol (``eval.resize`` letterbox | stretch, ``eval.zoom_in``, ``eval.flip``): one encoder pass
per image, then one cheap decoder pass per click round. :func:`evaluate` runs the
:class:`~ois_lightning.protocol.clicks.Clicker` for 20 clicks on every object and reports the paper's metrics
(NoC, NoF, k-mIoU, SPC with the encoder and per-click parts apart); samples without an object are counted as
skipped; under a process group the images are sharded over the ranks (:mod:`~ois_lightning.utils.parallel`).
What it leaves behind (results.json, plot, table row) is :mod:`~ois_lightning.protocol.report`.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..utils.atomic import Journal
from .clicks import Click, Clicker, iou
from ..config.schema import to_dict
from ..data import Sample
from .feature_cache import FeatureCache
from .metrics import summarize_ious, summarize_timing
from ..model import OISModel
from ..utils.parallel import gather_records, local_samples, rank_path, world
from .predictor import Predictor, click_arrays, predictor_for, protocol

MIN_CLICKS = 5  # 5-mIoU needs every object run to at least 5 clicks


@dataclass(frozen=True)
class ClickBudget:
    """How many clicks an object gets (isegm protocol): at most ``max_clicks``; once ``min_clicks`` are done, the
    object stops at the first IoU >= ``target_iou`` (None: never stop early, as the k-mIoU curve needs)."""

    max_clicks: int = 20
    target_iou: float | None = None
    min_clicks: int = 1

    def done(self, curve: Sequence[float]) -> bool:
        if len(curve) >= self.max_clicks:
            return True
        return self.target_iou is not None and len(curve) >= self.min_clicks and curve[-1] >= self.target_iou


def click_budget(cfg: Any) -> ClickBudget:
    """The :class:`ClickBudget` of ``cfg.clicks`` (max_eval, target_iou, min_eval)."""
    return ClickBudget(int(cfg.clicks.max_eval), cfg.clicks.target_iou, int(cfg.clicks.min_eval))


@dataclass
class ObjectRun:
    """One object under the protocol: IoU after each click, seconds spent in ``predict``, the clicks placed
    (original pixels) and the final bool (H,W) prediction."""

    curve: list[float]
    seconds: float
    clicks: list[Click]
    pred: np.ndarray


def run_object(predictor: Predictor, gt: np.ndarray, budget: ClickBudget = ClickBudget()) -> ObjectRun:
    """The protocol for one object on the image set in ``predictor``: clicks from the :class:`Clicker` until
    ``budget`` is done, each round :meth:`Predictor.predict` on all clicks so far (pred = prob > threshold),
    IoU after each click."""
    clicker = Clicker(gt)
    pred = np.zeros(gt.shape, dtype=bool)  # H,W; empty prediction before the first click
    prev: np.ndarray | None = None
    curve: list[float] = []
    click_seconds = 0.0
    while not budget.done(curve):
        clicker.next_click(pred)
        points, labels = click_arrays(clicker.clicks)  # K,2 (y, x); K
        start = time.perf_counter()
        pred, _ = predictor.predict(points, labels, prev)  # prob > threshold
        click_seconds += time.perf_counter() - start
        prev = pred
        curve.append(iou(gt, pred))
    return ObjectRun(curve, click_seconds, list(clicker.clicks), pred)


@dataclass
class EvalResult:
    """Per-object IoU curves (``ious[i][c]`` after click c + 1), the summary (metrics + timing) and the ids of
    the samples skipped for having no object mask."""

    ids: list[str]
    ious: list[list[float]]
    summary: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def evaluate_samples(predictor: Predictor, samples: Iterable[Sample], budget: ClickBudget = ClickBudget(),
                     max_objects: int | None = None, progress: bool = False,
                     journal: Journal | None = None) -> EvalResult:
    """Every object (instance mask) of every sample, in order, one encoding shared by the objects of an image;
    stops after ``max_objects`` objects (:func:`image_records`, summarised by :func:`summarize_records`)."""
    return summarize_records(image_records(predictor, samples, budget, max_objects, progress, journal), budget)


def image_records(predictor: Predictor, samples: Iterable[Sample], budget: ClickBudget = ClickBudget(),
                  max_objects: int | None = None, progress: bool = False,
                  journal: Journal | None = None) -> list[dict]:
    """One record per sample visited, in order (:func:`_evaluate_image`, plus ``wall_seconds``: the loop's time
    for the image, loading included); a sample without instance masks gives ``{"image": id, "skipped": True}``.
    Stops after ``max_objects`` objects. With a ``journal`` every finished image is recorded and an image
    already in it is taken from there without being encoded again: an interrupted evaluation resumes
    (skipped samples are found again)."""
    from tqdm import tqdm

    if budget.max_clicks < MIN_CLICKS:
        raise ValueError(f"clicks.max_eval={budget.max_clicks}: the protocol reports 5-mIoU, so run at least "
                         f"{MIN_CLICKS} clicks per object (the paper uses 20)")
    records: list[dict] = []
    taken = 0  # objects so far
    bar = tqdm(total=max_objects, unit="obj", desc="eval", disable=not progress)
    since = time.perf_counter()
    for sample in samples:
        if max_objects is not None and taken >= max_objects:
            break
        if len(sample.masks) == 0:
            records.append({"image": sample.id, "skipped": True})
            continue
        record = journal.records.get(sample.id) if journal is not None else None
        if record is None:
            record = _evaluate_image(predictor, sample, budget, None if max_objects is None else max_objects - taken)
            record["wall_seconds"] = time.perf_counter() - since
            if journal is not None:
                journal.add(record)
        records.append(record)
        taken += len(record["ids"])
        bar.update(len(record["ids"]))
        since = time.perf_counter()
    bar.close()
    return records


def summarize_records(records: Sequence[dict], budget: ClickBudget) -> EvalResult:
    """The :class:`EvalResult` of per-image ``records`` (:func:`image_records`, in dataset order): the summary
    holds :func:`summarize_ious` and :func:`summarize_timing` (SPC over the loop's seconds per click actually
    run, encoder per image, decoder per click) and ``num_images``; skipped samples are listed in ``skipped``."""
    done = [r for r in records if not r.get("skipped")]
    ids = [i for r in done for i in r["ids"]]
    ious = [c for r in done for c in r["ious"]]
    if not ids:
        raise ValueError("evaluation found no objects (every sample has an empty mask list)")
    summary = summarize_ious(ious, budget.max_clicks)
    summary.update(summarize_timing(sum(r["wall_seconds"] for r in done), sum(r["encoder_seconds"] for r in done),
                                    sum(r["click_seconds"] for r in done), sum(map(len, ious)), len(done)))
    summary["num_images"] = len(done)
    return EvalResult(ids, ious, summary, [r["image"] for r in records if r.get("skipped")])


def _evaluate_image(predictor: Predictor, sample: Sample, budget: ClickBudget, max_objects: int | None) -> dict:
    """One encoder pass, then the protocol for each object of ``sample`` (at most ``max_objects``) -> the
    image's record: ``image`` id, object ``ids``, IoU ``ious``, ``encoder_seconds``, ``click_seconds``."""
    t0 = time.perf_counter()
    predictor.set_image(sample)
    record: dict[str, Any] = {"image": sample.id, "ids": [], "ious": [],
                              "encoder_seconds": time.perf_counter() - t0, "click_seconds": 0.0}
    for k, gt in enumerate(sample.masks[:max_objects]):
        run = run_object(predictor, gt, budget)
        record["ids"].append(f"{sample.id}#{k}")
        record["ious"].append(run.curve)
        record["click_seconds"] += run.seconds
    return record


def fingerprint(model: OISModel, cfg: Any, dataset: str) -> str:
    """What an evaluation's results depend on: every weight of ``model`` (bytes), the ``model``, ``data`` and
    ``clicks`` config sections, ``eval.max_objects`` and ``eval.precision``, the :func:`protocol` and the dataset
    name (SHA-256, hex)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    full = to_dict(cfg)
    settings = {k: full[k] for k in ("model", "data", "clicks")}
    settings.update(max_objects=cfg.eval.max_objects, precision=cfg.eval.precision, protocol=protocol(cfg),
                    dataset=dataset)
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def evaluate(model: OISModel, dataset: Any, cfg: Any, progress: bool = True,
             journal: str | Path | None = None) -> EvalResult:
    """Run the protocol (:func:`click_budget` of cfg.clicks, threshold cfg.clicks.threshold) on ``dataset``
    (a sequence of :class:`Sample`), at most cfg.eval.max_objects objects; the model is put in eval mode.
    Under a process group the images are sharded over the ranks and every rank returns the whole result
    (:mod:`~ois_lightning.utils.parallel`). ``journal``: a file recording finished images (one per rank,
    :func:`~ois_lightning.utils.parallel.rank_path`; :class:`~ois_lightning.utils.atomic.Journal`, keyed by
    :func:`fingerprint`), so a rerun after an interruption evaluates only the rest."""
    model.eval()
    samples, max_objects = local_samples(dataset, cfg.eval.max_objects)
    predictor = predictor_for(model, cfg)
    if cfg.eval.feature_cache is not None:
        predictor.feature_cache = FeatureCache(cfg.eval.feature_cache, cfg.eval.cache_max_gb, model)
    log = None
    if journal is not None:
        log = Journal(rank_path(journal), fingerprint(model, cfg, str(getattr(dataset, "name", ""))), key="image")
        if log.records:
            print(f"resuming the evaluation: {len(log.records)} images already in {log.path}")
    budget = click_budget(cfg)
    result = summarize_records(gather_records(image_records(predictor, samples, budget, max_objects, progress, log)),
                               budget)
    if result.skipped and world()[0] == 0:
        print(f"skipped {len(result.skipped)} samples without an object mask (ids in results.json summary.skipped)")
    return result


