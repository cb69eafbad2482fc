"""``ois demo`` (``make demo``): Table 4's ablation reproduced in direction on a CPU, end to end.

1. ``ois sweep experiments/demo/sweep.yaml --local``: 5 rows (Full, w/o order, w/o object, w/o sparse, w/o
   dense) x 2 seeds, each a real Lightning training of the tiny backbone on layered scenes followed by the isegm
   protocol on held-out scenes (results.json per run; resumable).
2. ``ois table``: the Table-4-style table with deltas against Full and 95% bootstrap CIs.
3. Figures: mIoU vs clicks (one curve per row, mean over seeds) and a qualitative figure like the paper's
   Fig. 1/6 (image, depth, order map of the first click, Full vs w/o order with the clicks drawn).

``DEMO_FAST=1`` (or ``--fast``) runs one seed with a few training steps: a smoke test of the same pipeline.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "experiments" / "demo"
FAST_OVERRIDES = ["train.max_steps=30", "data.layered.test_length=6", "eval.max_objects=10", "train.val_objects=2"]
QUALITATIVE_SCENES = 3
QUALITATIVE_CLICKS = 3


def _row_curves(runs_dir: Path) -> dict[str, np.ndarray]:
    """Row name -> (clicks,) mIoU in percent, averaged over the seeds of that row."""
    from .metrics import miou_curve
    from .table import collect

    runs, _ = collect(runs_dir)
    by_row: dict[str, list[np.ndarray]] = {}
    for run in runs:
        by_row.setdefault(run.row or run.path.parent.parent.name, []).append(miou_curve(run.ious, run.max_clicks))
    return {row: 100 * np.mean(curves, axis=0) for row, curves in by_row.items()}


def plot_curves(runs_dir: Path, labels: dict[str, str], path: Path) -> None:
    """mIoU-vs-clicks, one curve per row in table order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .atomic import atomic_write

    curves = _row_curves(runs_dir)
    fig, ax = plt.subplots(figsize=(6, 4))
    for row, label in labels.items():
        if row in curves:
            ax.plot(np.arange(1, len(curves[row]) + 1), curves[row], marker="o", ms=3, label=label)
    ax.set(xlabel="clicks", ylabel="mIoU (%)", title="Demo: mIoU vs clicks (mean over seeds)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
    plt.close(fig)


def _first_click_order_map(predictor, gt: np.ndarray) -> np.ndarray:
    """Eq. 1 order map of the protocol's first (positive) click, in the original frame (H,W)."""
    import cv2
    import torch

    from .clicks import Clicker
    from .model.order import order_maps

    click = Clicker(gt).next_click(np.zeros(gt.shape, bool))
    coords = torch.tensor([[predictor.to_input(click.y, click.x)]], dtype=torch.float32)  # 1,1,2
    labels = torch.ones(1, 1, dtype=torch.long)
    m = order_maps(predictor.enc.depth.cpu(), coords, labels)[0, 0].numpy()  # S,S
    rh, rw = predictor.resized_size
    return cv2.resize(m[:rh, :rw], gt.shape[::-1], interpolation=cv2.INTER_LINEAR)


def plot_qualitative(cfg_full, cfg_wo_order, path: Path) -> None:
    """Paper Fig. 1/6 style: for a few test scenes, image | depth | order map of click 1 | Full | w/o order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_write
    from .evaluate import ClickBudget, predictor_for, run_object
    from .lit.datamodule import eval_dataset
    from .lit.train import load_weights

    predictors = [predictor_for(load_weights(c).eval(), c) for c in (cfg_full, cfg_wo_order)]
    dataset = eval_dataset(cfg_full, "test")
    scenes = [s for s in (dataset[i] for i in range(len(dataset))) if len(s.masks) >= 2][:QUALITATIVE_SCENES]
    fig, axes = plt.subplots(len(scenes), 5, figsize=(15, 3.2 * len(scenes)), squeeze=False)
    for r, sample in enumerate(scenes):
        gt = sample.masks[0]
        for p in predictors:
            p.set_image(sample)
        panels = [(sample.image, "image"), (sample.depth, "depth (disparity)"),
                  (_first_click_order_map(predictors[0], gt), "order map, click 1 (Eq. 1)")]
        for (img, title), ax in zip(panels, axes[r, :3]):
            ax.imshow(img, cmap=None if img.ndim == 3 else "gray")
            ax.set_title(title, fontsize=9)
        for ax, p, name in zip(axes[r, 3:], predictors, ("Full", "w/o order")):
            run = run_object(p, gt, ClickBudget(QUALITATIVE_CLICKS))
            clicks, pred, score = run.clicks, run.pred, run.curve[-1]
            ax.imshow(sample.image)
            orange = np.zeros((*pred.shape, 4))  # H,W,RGBA: the prediction in orange, transparent elsewhere
            orange[pred] = (1.0, 0.55, 0.0, 0.55)
            ax.imshow(orange)
            ax.contour(gt == 1, levels=[0.5], colors="cyan", linewidths=0.8)
            for c in clicks:
                ax.plot(c.x, c.y, "o", ms=6, mec="white", color="lime" if c.positive else "red")
            ax.set_title(f"{name}: {len(clicks)} clicks, IoU {100 * score:.1f}", fontsize=9)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle("Green: positive clicks, red: negative; cyan: ground truth; orange: prediction", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    plt.close(fig)


def run_demo(fast: bool = False, out_dir: str | Path = "demo_out", parallel: int = 2) -> int:
    """Sweep, table and figures into ``out_dir``; prints the wall time and where the outputs are."""
    from .config import load_config
    from .grid import load_table_spec
    from .sweep import run_local
    from .table import make_table

    start = time.perf_counter()
    out = Path(out_dir)
    runs = out / "runs"
    extra = FAST_OVERRIDES if fast else []
    print(f"[1/3] training + evaluating the demo grid ({'fast' if fast else 'full'} settings) into {runs}")
    rc = run_local(DEMO / ("sweep_fast.yaml" if fast else "sweep.yaml"), extra, parallel, runs)
    if rc != 0:
        print(f"ois demo: some runs failed; see {runs}/demo/*/seed*/train.log (re-run `make demo` to resume)")
        return rc
    print("[2/3] the Table-4-style table")
    spec_path = DEMO / "table.yaml"
    make_table(runs / "demo", spec_path, wandb_project=None)
    for name in ("table.md", "table.csv"):
        shutil.copyfile(runs / "demo" / name, out / name)
    print("[3/3] figures")
    spec = load_table_spec(spec_path)
    plot_curves(runs / "demo", {r.name: r.label for r in spec.rows}, out / "miou_vs_clicks.png")
    cfgs = [load_config(DEMO / f"{row}.yaml", [*extra, f"ckpt={runs / 'demo' / row / 'seed0' / 'checkpoints' / 'last.ckpt'}"])
            for row in ("full", "wo_order")]
    plot_qualitative(*cfgs, out / "qualitative.png")
    minutes = (time.perf_counter() - start) / 60
    print(f"demo finished in {minutes:.1f} min. Outputs in {out}/: table.md, table.csv, miou_vs_clicks.png, "
          f"qualitative.png; runs (results.json, checkpoints, logs) in {runs}/demo/")
    return 0
