"""What one evaluation leaves behind: ``results.json`` (schema in docs/evaluation.md, atomically, with the protocol
and the skipped samples), the mIoU-vs-clicks plot and the paper's table row."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..config.schema import to_dict
from ..utils.atomic import atomic_write
from ..utils.plots import FONT, TITLE, integer_ticks, new_figure, save_figure
from .evaluate import EvalResult
from .metrics import format_metric, miou_curve
from .predictor import protocol
from .results import settings_fingerprint

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TABLE_COLUMNS = ("NoC90", "NoC95", "1-mIoU", "5-mIoU", "NoF95")  # the paper's column order (Tables 1-2)


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


def plot_miou(ious: Sequence[Sequence[float]], path: Path, title: str = "") -> "Figure":
    """mIoU (%) after 1..N clicks as PNG and PDF (:func:`save_figure`, atomic), integer click ticks; N is the
    shortest curve (all clicks without an early stop)."""
    curve = 100.0 * miou_curve(ious, min(map(len, ious)))
    fig, axes = new_figure(1, 1)
    ax = axes[0, 0]
    ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", markersize=3)
    ax.set_xlabel("number of clicks", fontsize=FONT)
    ax.set_ylabel("mIoU (%)", fontsize=FONT)
    integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=TITLE)
    fig.set_size_inches(5, 3.5)
    save_figure(fig, path)
    return fig


def write_results(result: EvalResult, output_dir: str | Path, cfg: Any, dataset: str) -> Path:
    """``output_dir``/results.json (schema in docs/evaluation.md) and ``miou_vs_clicks.png`` / ``.pdf``, atomic. The
    summary also records the :func:`protocol` and the ``skipped`` samples (count and ids); ``fingerprint`` is
    :func:`~ois_lightning.protocol.results.settings_fingerprint` of ``cfg``."""
    out = Path(output_dir)
    skipped = {"count": len(result.skipped), "ids": result.skipped}
    payload = {
        "summary": {**result.summary, "protocol": protocol(cfg), "skipped": skipped},
        "per_object": {"ids": result.ids, "ious": result.ious},
        "config": to_dict(cfg),
        "fingerprint": settings_fingerprint(cfg),
        "git_commit": git_commit(),
        "seed": int(cfg.seed),
        "dataset": dataset,
        "threads": torch.get_num_threads(),  # torch's intra-op threads of this evaluation (numbers can differ)
    }
    path = out / "results.json"
    atomic_write(path, lambda f: json.dump(payload, f, indent=1))
    plot_miou(result.ious, out / "miou_vs_clicks.png", f"{cfg.name} on {dataset}")
    return path
