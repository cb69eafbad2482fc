"""What the final evaluation and ``ois table`` leave in W&B (runs from ``tracking/wandb_run.py``), no Lightning.

- Test (:func:`log_test`): the numbers, the mIoU-vs-clicks PNG and line plot, a per-object table (the worst
  objects by NoC90 with images), the evaluated checkpoint as a ``model`` artifact and results.json as a
  ``results`` artifact that names it (:func:`log_artifacts`).
- ``ois table`` (:func:`log_table`): the table's rows as a ``wandb.Table`` and their mIoU-vs-clicks curves
  overlaid in one line chart, in a run of its own.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import wandb
from omegaconf import DictConfig
from torch import nn

from ..data.splits import build_split
from ..protocol.evaluate import EvalResult, click_budget
from ..protocol.metrics import miou_curve, summarize_ious
from ..protocol.predictor import predictor_for
from ..protocol.results import results_paths
from .identity import run_identity
from .wandb_run import Sink, WandbRun, dataset_objects, render_object, wandb_mode

OBJECT_COLUMNS = ["id", "dataset", "NoC85", "NoC90", "NoC95", "IoU@1", "IoU@5", "IoU@20", "image"]
CURVES = "miou_vs_clicks"  # key of the table run's overlaid row curves: <table>/miou_vs_clicks


def test_prefix(dataset: str, datasets: Sequence[str]) -> str:
    """``test/`` with one test dataset, else ``test/<dataset>/``."""
    return "test/" if len(datasets) == 1 else f"test/{dataset}/"


def object_table(model: nn.Module, result: EvalResult, cfg: DictConfig, dataset: str) -> wandb.Table:
    """One row per evaluated object (:data:`OBJECT_COLUMNS`: NoC, IoU in percent after 1/5/20 clicks, None when
    not determined); the ``logger.log_images`` worst by NoC90 (then by final IoU) get the image, re-run."""
    budget = click_budget(cfg)
    rows = []
    for oid, curve in zip(result.ids, result.ious):
        s = summarize_ious([curve], budget.max_clicks)
        nocs = [None if s[f"NoC{t}"] is None else int(s[f"NoC{t}"]) for t in (85, 90, 95)]
        rows.append([oid, dataset, *nocs, *(100 * curve[k - 1] if k <= len(curve) else None for k in (1, 5, 20)),
                     None])
    worst = sorted(range(len(rows)), key=lambda i: (-(rows[i][3] or 0), result.ious[i][-1]))
    position = {result.ids[i]: i for i in worst[:max(cfg.logger.log_images, 0)]}
    if position:
        predictor = predictor_for(model, cfg)
        for sample, k in dataset_objects(build_split(cfg, dataset, "test"), set(position)):
            rows[position[f"{sample.id}#{k}"]][-1] = render_object(predictor, sample, k, budget)[0]
    return wandb.Table(columns=OBJECT_COLUMNS, data=rows)


def miou_plot(result: EvalResult, dataset: str) -> Any:
    """mIoU (%) after 1..N clicks as a W&B line plot (N: the shortest curve)."""
    curve = 100.0 * miou_curve(result.ious, min(map(len, result.ious)))
    table = wandb.Table(columns=["clicks", "mIoU"], data=[[k + 1, float(v)] for k, v in enumerate(curve)])
    return wandb.plot.line(table, "clicks", "mIoU", title=f"mIoU vs clicks ({dataset})")


def artifact_name(cfg: DictConfig, kind: str) -> str:
    """``<run name>-<kind>`` (:func:`run_identity`), with characters W&B does not allow replaced by ``-``."""
    return re.sub(r"[^\w.-]", "-", run_identity(cfg)[2]) + f"-{kind}"


def log_artifacts(run: Any, paths: dict[str, Path], cfg: DictConfig, checkpoint: Path | None, step: int) -> None:
    """The ``checkpoint`` evaluated (if any) as an artifact of type ``model`` (``<run name>-model``), then every
    results.json of the run as one of type ``results`` (``<run name>-results``), each file at its path relative
    to output_dir (``wandb artifact get --root <output_dir>`` restores the layout). The results artifact names
    the checkpoint artifact and its digest in its metadata (``checkpoint``, ``checkpoint_digest``): W&B's
    ``use_artifact`` needs a server, so the link is written down rather than drawn as an input of the run."""
    identity = {"table": cfg.get("table"), "row": cfg.get("row"), "seed": int(cfg.seed)}
    link: dict[str, Any] = {"checkpoint": None, "checkpoint_digest": None}
    if checkpoint is not None:
        model = wandb.Artifact(artifact_name(cfg, "model"), type="model",
                               metadata={**identity, "step": int(step), "file": checkpoint.name})
        model.add_file(str(checkpoint), name=checkpoint.name)
        run.log_artifact(model)
        link = {"checkpoint": artifact_name(cfg, "model"), "checkpoint_digest": model.digest}
    results = wandb.Artifact(artifact_name(cfg, "results"), type="results",
                             metadata={**identity, "datasets": list(paths), **link})
    for path in paths.values():
        results.add_file(str(path), name=path.relative_to(cfg.output_dir).as_posix())
    run.log_artifact(results)


def log_test(logger: Sink, results: dict[str, EvalResult], cfg: DictConfig, step: int, model: nn.Module,
             checkpoint: str | Path | None = None) -> None:
    """Each dataset's summary as ``test/<metric>`` (``test/<dataset>/<metric>`` with several; metrics an early
    stop left undetermined are skipped) and, on W&B, its mIoU-vs-clicks PNG and line plot, the per-object
    table (:func:`object_table`), the artifacts of the ``checkpoint`` file evaluated (with
    ``logger.log_checkpoint``) and of the results (:func:`log_artifacts`); then the logger is closed."""
    paths = results_paths(cfg.output_dir, list(results))
    on_wandb = isinstance(logger, WandbRun)
    for name, result in results.items():
        prefix = test_prefix(name, list(results))
        logger.log_metrics({prefix + k: v for k, v in result.summary.items() if v is not None}, step=step)
        if on_wandb:
            logger.log_metrics({prefix + "miou_vs_clicks": wandb.Image(str(paths[name].parent / "miou_vs_clicks.png")),
                                prefix + "miou_curve": miou_plot(result, name),
                                prefix + "objects": object_table(model, result, cfg, name)}, step=step)
    logger.save()
    if on_wandb:
        logged = Path(checkpoint) if checkpoint is not None and cfg.logger.log_checkpoint else None
        log_artifacts(logger.run, paths, cfg, logged, step)
        logger.run.finish()  # close the run, so another run can start in this process


def log_table(name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              curves: Sequence[tuple[str, np.ndarray]], project: str, folder: str | Path,
              always: bool = False) -> str | None:
    """Log a table (its header and rows, e.g. ``ois table``'s CSV) as a ``wandb.Table`` under ``name`` and the
    rows' mIoU-vs-clicks ``curves`` (label, values after 1..N clicks) overlaid in one line chart,
    ``<name>/miou_vs_clicks``, in a run of its own (``<name>-table``, job type table, files under ``folder``):
    when W&B is online, or with ``always`` in whatever mode :func:`wandb_mode` gives (offline: a folder for
    ``wandb sync``). -> the mode logged in, or None."""
    mode = wandb_mode()
    if mode == "disabled" or (mode != "online" and not always):
        return None
    with wandb.init(project=project, group=name, job_type="table", name=f"{name}-table", tags=[name, "table"],
                    mode=mode, dir=str(folder)) as run:
        logged: dict[str, Any] = {name: wandb.Table(columns=list(columns), data=[list(row) for row in rows])}
        if curves:
            n = min(len(c) for _, c in curves)
            logged[f"{name}/{CURVES}"] = wandb.plot.line_series(
                xs=list(range(1, n + 1)), ys=[[float(v) for v in c[:n]] for _, c in curves],
                keys=[label for label, _ in curves], title=f"{name}: mIoU (%) vs clicks, one line per row",
                xname="clicks")
        run.log(logged)
    return mode
