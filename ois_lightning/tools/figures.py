"""``ois figure``: the paper's figures from checkpoints.

* ``qualitative.png`` (Figs. 1, 4, 5): per object, the image with its ground truth, then for every checkpoint
  the prediction after k clicks of the protocol (``--clicks 1,3,5``), checkpoints side by side.
* ``order_maps.png`` (Fig. 3): image with a positive and a negative click, the model's depth, the order map of
  the positive click (Eq. 1) and of the negative click (Eq. 2); darker = closer in order to the click.
* ``attention.png`` (Fig. 6): a click token's attention over the feature grid in one fusion block's order-aware
  attention, before (softmax(QK^T / sqrt d)) and after the order bias (softmax(QK^T / sqrt d - sigma M)),
  mean over heads, for the positive and the negative click.

Each is written as vector PDF and PNG (:func:`~ois_lightning.utils.plots.save_figure`); maps use perceptual colour
maps (:data:`DEPTH_CMAP`, :data:`ORDER_CMAP`, :data:`ATTENTION_CMAP`) with a labelled colour bar, and checkpoints
are named by the label of their table row (``experiments/<table>/table.yaml``, e.g. "w/o order").

The two clicks of Figs. 3 and 6 are the protocol's first click (centre of the object) and a negative click at
the centre of the background (the protocol's click for an all-foreground prediction), in one round without a
previous mask. Colours as ``ois demo``: green positive, red negative, cyan ground truth, orange prediction.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch

from ..model.order import normalize_depth
from ..protocol.clicks import Click, Clicker
from ..config.schema import ConfigError
from ..data import Sample
from ..grids.table_spec import default_table_path, load_table_spec
from ..protocol.evaluate import ClickBudget, click_budget, evaluate_samples, run_object
from ..protocol.metrics import noc_per_object
from ..protocol.predictor import Predictor, click_arrays, predictor_for
from ..utils.plots import SUPTITLE, TITLE, colour_bar, new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


DEPTH_CMAP = "magma"  # depth, 1 = near: bright
ORDER_CMAP = "viridis"  # order maps: dark = same depth as the click (as the W&B images, tracking/drawing.py)
ATTENTION_CMAP = "magma"  # attention / its maximum, over the image

def draw_clicks(ax: "Axes", clicks: Sequence[Click]) -> None:
    for c in clicks:
        ax.plot(c.x, c.y, "o", ms=6, mec="white", color="lime" if c.positive else "red")


def draw_prediction(ax: "Axes", image: np.ndarray, gt: np.ndarray, pred: np.ndarray | None) -> None:
    """Image, the prediction in orange (if any) and the ground-truth outline in cyan."""
    ax.imshow(image)
    if pred is not None:
        orange = np.zeros((*pred.shape, 4))  # H,W,RGBA
        orange[pred] = (1.0, 0.55, 0.0, 0.55)
        ax.imshow(orange)
    ax.contour(gt == 1, levels=[0.5], colors="cyan", linewidths=0.8)


def _finish(fig: "Figure", axes: np.ndarray, title: str) -> "Figure":
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=SUPTITLE)
    return fig


# ------------------------------------------------------------------------------------ Figs. 1, 4, 5: strip
def strip_figure(objects: Sequence[tuple[Sample, int]], predictors: Sequence[tuple[str, Predictor]],
                 clicks: Sequence[int]) -> "Figure":
    """Rows: objects (sample, mask index). Columns: image + ground truth, then for each named predictor the
    prediction after each of ``clicks`` protocol clicks (clicks drawn, IoU in the title)."""
    fig, axes = new_figure(len(objects), 1 + len(predictors) * len(clicks))
    for r, (sample, k) in enumerate(objects):
        gt = sample.masks[k]
        draw_prediction(axes[r, 0], sample.image, gt, None)
        axes[r, 0].set_title(f"{sample.id}#{k}", fontsize=TITLE)
        col = 1
        for name, predictor in predictors:
            predictor.set_image(sample)
            for n in clicks:
                run = run_object(predictor, gt, ClickBudget(n))
                draw_prediction(axes[r, col], sample.image, gt, run.pred)
                draw_clicks(axes[r, col], run.clicks)
                axes[r, col].set_title(f"{name}: {n} click{'s' * (n > 1)}, IoU {100 * run.curve[-1]:.1f}",
                                       fontsize=TITLE)
                col += 1
    return _finish(fig, axes, "Green: positive clicks, red: negative; cyan: ground truth; orange: prediction")


# ------------------------------------------------------------------------------- Fig. 3: order maps
def probe_clicks(gt: np.ndarray) -> list[Click]:
    """A positive click at the object's centre and a negative one at the background's centre."""
    pos = Clicker(gt).next_click(np.zeros(gt.shape, dtype=bool))
    neg = Clicker(gt).next_click(np.ones(gt.shape, dtype=bool))  # all foreground: the error is the background
    return [pos, neg]


def order_figure(objects: Sequence[tuple[Sample, int]], predictor: Predictor) -> "Figure":
    """Rows: objects. Columns: image + clicks, the data's own depth where the samples have one (the exact depth of
    generated scenes), the depth the model computes, the order map of the positive click (Eq. 1) and of the
    negative click (Eq. 2) on that depth (:meth:`Predictor.order_map`)."""
    exact = all(sample.depth is not None for sample, _ in objects)
    fig, axes = new_figure(len(objects), 5 if exact else 4)
    for r, (sample, k) in enumerate(objects):
        predictor.set_image(sample)
        clicks = probe_clicks(sample.masks[k])
        maps = predictor.order_map(*click_arrays(clicks))
        draw_prediction(axes[r, 0], sample.image, sample.masks[k], None)
        draw_clicks(axes[r, 0], clicks)
        axes[r, 0].set_title(f"{sample.id}#{k}", fontsize=TITLE)
        panels = [(maps["depth"], "model's depth", None), (maps["positive"], "order map, positive (Eq. 1)", clicks[0]),
                  (maps["negatives"][0], "order map, negative (Eq. 2)", clicks[1])]
        if exact:
            panels.insert(0, (normalised(sample.depth, sample.depth_kind), "the data's depth", None))
        for ax, (m, title, click) in zip(axes[r, 1:], panels):
            image = ax.imshow(m, cmap=DEPTH_CMAP if click is None else ORDER_CMAP, vmin=0, vmax=1)
            colour_bar(fig, image, ax, "depth R (1 = near)" if click is None else "|R - R(click)|")
            if click is not None:
                draw_clicks(ax, [click])
            ax.set_title(title, fontsize=TITLE)
    return _finish(fig, axes, "Order maps: darker = closer in order to the click (green positive, red negative)")


def normalised(depth: np.ndarray, kind: str) -> np.ndarray:
    """(H,W) depth of either kind -> disparity-like 0..1 (1 = near): the model's own rule, :func:`normalize_depth`."""
    return normalize_depth(torch.from_numpy(np.asarray(depth, np.float32))[None, None], kind)[0, 0].numpy()


# ------------------------------------------------------------------------------ Fig. 6: attention
def attention_figure(objects: Sequence[tuple[Sample, int]], predictor: Predictor, block: int = 0) -> "Figure":
    """Rows: objects. Columns: image + clicks, then for the positive and the negative click the attention of
    its token before and after the order bias (:meth:`Predictor.attention`, mean over heads)."""
    fig, axes = new_figure(len(objects), 5)
    for r, (sample, k) in enumerate(objects):
        predictor.set_image(sample)
        clicks = probe_clicks(sample.masks[k])
        weights = predictor.attention(*click_arrays(clicks), block=block)
        draw_prediction(axes[r, 0], sample.image, sample.masks[k], None)
        draw_clicks(axes[r, 0], clicks)
        axes[r, 0].set_title(f"{sample.id}#{k}", fontsize=TITLE)
        col = 1
        for i, click in enumerate(clicks):  # the positive click, then the negative one
            for when in ("before", "after"):
                m = weights[when][i]  # H,W
                axes[r, col].imshow(sample.image)
                image = axes[r, col].imshow(m / max(m.max(), 1e-12), cmap=ATTENTION_CMAP, alpha=0.6, vmin=0, vmax=1)
                colour_bar(fig, image, axes[r, col], "attention / its maximum")
                draw_clicks(axes[r, col], [click])
                kind = "positive" if click.positive else "negative"
                axes[r, col].set_title(f"{kind} click, {when} order bias", fontsize=TITLE)
                col += 1
    return _finish(fig, axes, f"Order-aware attention of fusion block {block} (mean over heads)")


# ------------------------------------------------------------------------------------- ois figure
def parse_object_id(text: str) -> tuple[str, int]:
    """``SAMPLE#K`` (as results.json ids) -> (SAMPLE, K); a bare ``SAMPLE`` is its object 0."""
    sample, _, k = text.rpartition("#") if "#" in text else (text, "", "0")
    return sample, int(k)


def row_label(cfg: Any) -> str:
    """A checkpoint's name in the figures: the label of its table row (``rows.<row>.label`` of
    ``experiments/<table>/table.yaml``, e.g. "w/o order"); its row key or run name when no table spec has it."""
    if cfg.get("table") and cfg.get("row"):
        try:
            return load_table_spec(default_table_path(cfg.table)).row(cfg.row).label
        except (ConfigError, KeyError):
            pass
    return cfg.row or cfg.name


def worst_objects(predictor: Predictor, samples: Iterable[Sample], cfg: Any, n: int) -> list[str]:
    """Ids (``SAMPLE#K``) of the ``n`` objects with the highest NoC90 under the protocol of ``cfg`` (ties: the
    lower IoU after the last click first), at most ``eval.max_objects`` objects evaluated."""
    budget = click_budget(cfg)
    result = evaluate_samples(predictor, samples, budget, cfg.eval.max_objects)
    noc = noc_per_object(result.ious, 0.90, budget.max_clicks)
    order = sorted(range(len(noc)), key=lambda i: (-noc[i], result.ious[i][-1]))
    return [result.ids[i] for i in order[:n]]


def run_figures(ckpts: Sequence[str], out_dir: str | Path, config: str | None = None, overrides: Sequence[str] = (),
                ids: Sequence[str] | None = None, worst: int = 3, clicks: Sequence[int] = (1, 3, 5),
                dataset: str | None = None, block: int = 0) -> dict[str, Path]:
    """``ois figure``: the figures of this module for objects of ``dataset`` (default the first of
    ``data.test``, built with the first checkpoint's config): ``ids``, or the ``worst`` by NoC90 under the first
    checkpoint. Figs. 3 and 6 use the first checkpoint that has what they show. -> name -> path written."""
    from ..data.splits import build_split
    from ..checkpoint import load_checkpoint

    loaded = [load_checkpoint(c, config, overrides) for c in ckpts]
    cfg = loaded[0][1]
    name = dataset or cfg.data.test[0]
    split = build_split(cfg, name, "test")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    predictors = [predictor_for(model.to(device), c) for model, c in loaded]
    if not ids:
        ids = worst_objects(predictors[0], (split[i] for i in range(len(split))), cfg, worst)
    wanted = [parse_object_id(i) for i in ids]
    by_id = {s.id: s for s in (split[i] for i in range(len(split))) if s.id in {w for w, _ in wanted}}
    missing = [f"{s}#{k}" for s, k in wanted if s not in by_id or k >= len(by_id[s].masks)]
    if missing:
        raise ConfigError(f"--ids: objects not in {name}: {', '.join(missing)} (ids as in results.json)")
    objects = [(by_id[s], k) for s, k in wanted]
    names = [row_label(c) for _, c in loaded]
    labels = [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]
    out = Path(out_dir)
    written = {"qualitative": save_figure(strip_figure(objects, list(zip(labels, predictors)), clicks),
                                          out / "qualitative.png")}
    with_depth = [p for p in predictors if p.model.uses_depth]
    if with_depth:
        written["order_maps"] = save_figure(order_figure(objects, with_depth[0]), out / "order_maps.png")
    with_order = [p for p in predictors if p.model.order_mode is not None]
    if with_order:
        written["attention"] = save_figure(attention_figure(objects, with_order[0], block), out / "attention.png")
    skipped = sorted({"order_maps", "attention"} - set(written))
    print(f"wrote {', '.join(map(str, written.values()))} (each also as .pdf)"
          + (f"; no checkpoint reads depth / has order attention, so no {', '.join(skipped)}" if skipped else ""))
    return written
