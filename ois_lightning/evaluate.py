"""The isegm evaluation protocol for OIS (paper Sec. 4.1, App. A.1; ``/work/shared/notes/protocol.md``).

:class:`Predictor` wraps an :class:`~ois_lightning.model.OISModel` for one image: the eval transform (longest
side to ``input_size``, top-left pad), one encoder pass per image, then one cheap decoder pass per click round,
with clicks mapped from original to input pixels and the probability map mapped back. :func:`evaluate` runs the
:class:`~ois_lightning.clicks.Clicker` for 20 clicks on every object and reports the paper's metrics
(NoC, NoF, k-mIoU, SPC with the encoder and per-click parts apart); :func:`write_results` writes results.json
(atomically), the mIoU-vs-clicks plot and the table row.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .atomic import Journal, atomic_write
from .clicks import Click, Clicker, iou
from .config import to_dict, uses_depth
from .data import Sample, apply, build_eval_transform
from .data.transforms import EXACT_NEAREST
from .feature_cache import FeatureCache
from .metrics import format_metric, miou_curve, summarize_ious, summarize_timing
from .model import ImageEncoding, OISModel
from .model.prompts import NEG, POS

MIN_CLICKS = 5  # 5-mIoU needs every object run to at least 5 clicks
TABLE_COLUMNS = ("NoC90", "NoC95", "1-mIoU", "5-mIoU", "NoF95")  # the paper's column order (Tables 1-2)


class Predictor:
    """Interactive prediction on one image at a time (paper Fig. 2: encode once, decode per click).

    ``set_image`` transforms and encodes; ``predict`` maps integer (y, x) clicks of the original image to
    input pixels, runs one click round and returns the (H,W) probability map in the original resolution.
    The encoder call lives in :meth:`encode` alone, so a feature cache can wrap or override it.
    """

    def __init__(self, model: OISModel, input_size: int, threshold: float = 0.49,
                 depth_from_sample: bool = False) -> None:
        self.model = model
        self.input_size = input_size
        self.threshold = threshold
        self.depth_from_sample = depth_from_sample  # data.depth.source is file/gt: the sample carries depth
        self.transform = build_eval_transform(input_size)
        self.enc: ImageEncoding | None = None
        self.original_size = (0, 0)  # (H, W) of the original image
        self.resized_size = (0, 0)  # (h, w) of the image inside the padded input
        self.feature_cache: FeatureCache | None = None  # eval.feature_cache: encodings shared across runs

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def set_image(self, sample: Sample) -> None:
        """Transform ``sample`` to the input frame and run the encoder once."""
        if self.depth_from_sample and sample.depth is None:
            raise ValueError(f"sample {sample.id}: no depth map, but data.depth.source needs one (file or gt)")
        x, _ = apply(self.transform, sample)
        assert x.valid is not None
        self.original_size = sample.image.shape[:2]
        self.resized_size = (int(x.valid.any(1).sum()), int(x.valid.any(0).sum()))
        image = torch.from_numpy(x.image).to(self.device).permute(2, 0, 1)[None].float() / 255.0  # 1,3,S,S
        depth = None
        if self.depth_from_sample:
            depth = torch.from_numpy(np.ascontiguousarray(x.depth, np.float32)).to(self.device)[None, None]  # 1,1,S,S
        self.enc = self.encode(image, depth, sample.depth_kind)

    def encode(self, image: Tensor, depth: Tensor | None, depth_kind: str) -> ImageEncoding:
        """The one encoder pass per image, read from / written to ``feature_cache`` when one is set."""
        if self.feature_cache is not None:
            return self.feature_cache.encode(image, depth, depth_kind)
        return self.model.encode(image, depth, depth_kind)

    def to_input(self, y: float, x: float) -> tuple[float, float]:
        """Original pixel (y, x) -> input pixel: pixel centres map to pixel centres, padding is top-left."""
        (h, w), (rh, rw) = self.original_size, self.resized_size
        return (y + 0.5) * rh / h - 0.5, (x + 0.5) * rw / w - 0.5

    def _prev_input(self, prev_mask: np.ndarray) -> Tensor:
        """(H,W) previous prediction in the original frame -> (1,1,S,S) float {0,1} in the input frame."""
        rh, rw = self.resized_size
        resized = cv2.resize(prev_mask.astype(np.uint8), (rw, rh), interpolation=EXACT_NEAREST)  # rh,rw
        padded = np.zeros((self.input_size, self.input_size), np.float32)
        padded[:rh, :rw] = resized
        return torch.from_numpy(padded).to(self.device)[None, None]

    @torch.no_grad()
    def predict(self, clicks: Sequence[Click], prev_mask: np.ndarray | None = None) -> np.ndarray:
        """One click round: all ``clicks`` so far (original pixels) and the previous round's bool (H,W)
        prediction (None in round 1) -> (H,W) float32 probability in the original resolution."""
        if self.enc is None:
            raise RuntimeError("Predictor.predict called before set_image")
        coords = torch.tensor([self.to_input(c.y, c.x) for c in clicks], dtype=torch.float32,
                              device=self.device).view(1, -1, 2)  # 1,K,2
        labels = torch.tensor([POS if c.positive else NEG for c in clicks], dtype=torch.long,
                              device=self.device).view(1, -1)  # 1,K
        prev = self._prev_input(prev_mask) if prev_mask is not None else None
        logits = self.model(self.enc, coords, labels, prev)  # 1,1,S,S
        rh, rw = self.resized_size
        logits = F.interpolate(logits[..., :rh, :rw].float(), size=self.original_size, mode="bilinear",
                               align_corners=False)  # 1,1,H,W
        return torch.sigmoid(logits)[0, 0].cpu().numpy()


def predictor_for(model: OISModel, cfg: Any) -> Predictor:
    """The :class:`Predictor` a config asks for (input size, threshold, where depth comes from)."""
    return Predictor(model, cfg.model.input_size, cfg.clicks.threshold,
                     depth_from_sample=cfg.data.depth.source in ("file", "gt") and uses_depth(cfg.model))


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
    ``budget`` is done, pred = prob > threshold, IoU after each click."""
    clicker = Clicker(gt)
    pred = np.zeros(gt.shape, dtype=bool)  # H,W; empty prediction before the first click
    prev: np.ndarray | None = None
    curve: list[float] = []
    click_seconds = 0.0
    while not budget.done(curve):
        clicker.next_click(pred)
        start = time.perf_counter()
        prob = predictor.predict(clicker.clicks, prev)
        click_seconds += time.perf_counter() - start
        pred = prob > predictor.threshold
        prev = pred
        curve.append(iou(gt, pred))
    return ObjectRun(curve, click_seconds, list(clicker.clicks), pred)


@dataclass
class EvalResult:
    """Per-object IoU curves (``ious[i][c]`` after click c + 1) and the summary (metrics + timing)."""

    ids: list[str]
    ious: list[list[float]]
    summary: dict = field(default_factory=dict)


def evaluate_samples(predictor: Predictor, samples: Iterable[Sample], budget: ClickBudget = ClickBudget(),
                     max_objects: int | None = None, progress: bool = False,
                     journal: Journal | None = None) -> EvalResult:
    """Every object (instance mask) of every sample, in order, one encoding shared by the objects of an image;
    stops after ``max_objects`` objects. The summary holds :func:`summarize_ious` and
    :func:`summarize_timing` (SPC over the whole loop per click actually run, encoder per image, decoder per
    click). With a ``journal`` every finished image is recorded (curves and timings) and an image already in
    it is taken from there without being encoded again: an interrupted evaluation resumes."""
    from tqdm import tqdm

    if budget.max_clicks < MIN_CLICKS:
        raise ValueError(f"clicks.max_eval={budget.max_clicks}: the protocol reports 5-mIoU, so run at least "
                         f"{MIN_CLICKS} clicks per object (the paper uses 20)")
    ids: list[str] = []
    ious: list[list[float]] = []
    encoder_seconds = click_seconds = total = 0.0
    num_images = 0
    bar = tqdm(total=max_objects, unit="obj", desc="eval", disable=not progress)
    since = time.perf_counter()  # the loop's time for an image includes loading it
    for sample in samples:
        if max_objects is not None and len(ids) >= max_objects:
            break
        if len(sample.masks) == 0:
            continue
        record = journal.records.get(sample.id) if journal is not None else None
        if record is None:
            record = _evaluate_image(predictor, sample, budget, None if max_objects is None else max_objects - len(ids))
            record["wall_seconds"] = time.perf_counter() - since
            if journal is not None:
                journal.add(record)
        ids += record["ids"]
        ious += record["ious"]
        encoder_seconds += record["encoder_seconds"]
        click_seconds += record["click_seconds"]
        total += record["wall_seconds"]
        num_images += 1
        bar.update(len(record["ids"]))
        since = time.perf_counter()
    bar.close()
    if not ids:
        raise ValueError("evaluation found no objects (every sample has an empty mask list)")
    summary = summarize_ious(ious, budget.max_clicks)
    summary.update(summarize_timing(total, encoder_seconds, click_seconds, sum(map(len, ious)), num_images))
    summary["num_images"] = num_images
    return EvalResult(ids, ious, summary)


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
    ``clicks`` config sections, ``eval.max_objects`` and the dataset name (SHA-256, hex)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    full = to_dict(cfg)
    settings = {k: full[k] for k in ("model", "data", "clicks")}
    settings.update(max_objects=cfg.eval.max_objects, dataset=dataset)
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def evaluate(model: OISModel, dataset: Any, cfg: Any, progress: bool = True,
             journal: str | Path | None = None) -> EvalResult:
    """Run the protocol (:func:`click_budget` of cfg.clicks, threshold cfg.clicks.threshold) on ``dataset``
    (a sequence of :class:`Sample`), at most cfg.eval.max_objects objects; the model is put in eval mode.
    ``journal``: a file recording finished images (:class:`~ois_lightning.atomic.Journal`, keyed by
    :func:`fingerprint`), so a rerun after an interruption evaluates only the rest."""
    model.eval()
    samples = (dataset[i] for i in range(len(dataset)))
    predictor = predictor_for(model, cfg)
    if cfg.eval.feature_cache is not None:
        predictor.feature_cache = FeatureCache(cfg.eval.feature_cache, cfg.eval.cache_max_gb, model)
    log = None
    if journal is not None:
        log = Journal(journal, fingerprint(model, cfg, str(getattr(dataset, "name", ""))), key="image")
        if log.records:
            print(f"resuming the evaluation: {len(log.records)} images already in {journal}")
    return evaluate_samples(predictor, samples, click_budget(cfg), cfg.eval.max_objects, progress, log)


def git_commit(cwd: str | Path | None = None) -> str | None:
    """HEAD commit of the repository this package lives in, or None outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def table_row(summary: dict) -> str:
    """One Markdown table row in the paper's column order: NoC90 | NoC95 | 1-mIoU | 5-mIoU | NoF95 ("n/a": a
    metric an early stop left undetermined)."""
    return "| " + " | ".join(format_metric(summary[c]) for c in TABLE_COLUMNS) + " |"


def plot_miou(ious: Sequence[Sequence[float]], path: Path, title: str = "") -> None:
    """mIoU (%) after 1..N clicks as a PNG (matplotlib Agg), written atomically; N is the shortest curve (all
    clicks without an early stop)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    curve = 100.0 * miou_curve(ious, min(map(len, ious)))
    fig = Figure(figsize=(5, 3.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", markersize=3)
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("mIoU (%)")
    ax.set_xticks(np.arange(1, len(curve) + 1, 2 if len(curve) > 10 else 1))
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"), mode="wb")


def write_results(result: EvalResult, output_dir: str | Path, cfg: Any, dataset: str) -> Path:
    """``output_dir``/results.json (schema in docs/training.md) and ``miou_vs_clicks.png``, both atomic."""
    out = Path(output_dir)
    payload = {
        "summary": result.summary,
        "per_object": {"ids": result.ids, "ious": result.ious},
        "config": to_dict(cfg),
        "git_commit": git_commit(),
        "seed": int(cfg.seed),
        "dataset": dataset,
    }
    path = out / "results.json"
    atomic_write(path, lambda f: json.dump(payload, f, indent=1))
    plot_miou(result.ious, out / "miou_vs_clicks.png", f"{cfg.name} on {dataset}")
    return path
