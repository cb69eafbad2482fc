"""The tracking layer's runs: every W&B run starts here (W&B is imported only under ``tracking/``), no Lightning.

- Mode (:func:`wandb_mode`): an explicit ``WANDB_MODE`` is honoured (``disabled``: no logger, no files);
  unset, W&B runs online when an API key is found, else offline.
- Runs (:func:`start_run`): ``ois train`` hands the run to Lightning's WandbLogger (``lit/loggers.py``);
  ``ois eval`` logs to a run of its own, or to ``csv_eval/`` (:func:`eval_logger`). Run id: a resumed training
  (``ckpt_path``) asks for the id in ``<output_dir>/wandb_run_id``; otherwise, and always under a sweep agent
  (which chose the run), W&B picks. Rank 0 writes the id W&B actually used there, so ``ckpt_path=last``
  continues that run.
- Loggers (:class:`Sink`): Lightning's, a W&B run (:class:`WandbRun`) or
  :class:`~ois_lightning.tracking.csv_log.CSVLog`.
- Summaries: a table metric is declared when it is first logged (:meth:`WandbRun.declare`), so the run declares
  only what it logs: NoC/NoF keep their minimum, k-mIoU its maximum (directions of
  :data:`~ois_lightning.protocol.metrics.METRIC_GOALS`).
- Config: the resolved config; keys a sweep locked keep the sweep's value, the run's own goes to ``resolved``
  (:meth:`WandbRun.log_hyperparams`). Parameter counts per model part (:func:`log_parameter_counts`).
- Validation (:func:`log_validation`): a few objects as images with clicks, ground truth and prediction masks,
  and the order map of the first click. The final evaluation and ``ois table``: ``tracking/wandb_results.py``.
"""
from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence
from urllib.parse import urlparse

import numpy as np
import wandb
from omegaconf import DictConfig
from torch import nn

from ..utils.atomic import atomic_write
from ..config.schema import ConfigError
from .csv_log import CSVLog
from .drawing import draw_clicks, first_click_order_map, order_map_image
from ..data import Sample
from ..protocol.evaluate import ClickBudget, run_object
from ..protocol.metrics import METRIC_GOALS
from .identity import run_identity
from ..protocol.predictor import Predictor, predictor_for

WANDB_RUN_ID = "wandb_run_id"  # in output_dir: the W&B run a resumed training continues
MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}
SWEEP_ENV = "WANDB_SWEEP_ID"  # set by `wandb agent` for the runs it starts (beside WANDB_RUN_ID, its run id)
RESOLVED = "resolved"  # config key: the run's values of keys a sweep locked (WandbRun.keep_resolved)
STEP = "trainer/global_step"  # the x-axis of Lightning's WandbLogger, kept for every run


# ------------------------------------------------------------------------------------------------ runs
def _logged_in() -> bool:
    """An API key in WANDB_API_KEY or a netrc entry for the W&B host (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """``online``, ``offline`` or ``disabled``: ``WANDB_MODE`` when set (``dryrun`` = offline, ``run`` = online);
    unset, online when logged in (:func:`_logged_in`), else offline, so no run ever asks for a login."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if not mode:
        return "online" if _logged_in() else "offline"
    if mode not in MODES:
        raise ConfigError(f"WANDB_MODE={mode}: expected one of {', '.join(MODES)}")
    return MODES[mode]


def under_sweep_agent() -> bool:
    """Whether ``wandb agent`` started this process (it chose the run id; W&B ignores ours)."""
    return bool(os.environ.get(SWEEP_ENV))


def wandb_run_id(cfg: DictConfig) -> str | None:
    """The id to ask W&B for: when resuming (``ckpt_path`` set) the id in ``<output_dir>/wandb_run_id``, so the
    resumed run's charts continue; otherwise None (W&B picks). Under a sweep agent always None."""
    path = Path(cfg.output_dir) / WANDB_RUN_ID
    if cfg.ckpt_path is None or not path.is_file():
        return None
    if under_sweep_agent():
        print(f"ois: note: resuming under a sweep agent: W&B logs to the agent's run, not to run "
              f"{path.read_text().strip()}; resume outside the agent to continue that one", file=sys.stderr)
        return None
    return path.read_text().strip() or None


def start_run(cfg: DictConfig, eval_only: bool = False) -> Any | None:
    """Start the W&B run of ``cfg`` (rank 0 only): project/group/name/tags from :func:`run_identity`, mode from
    :func:`wandb_mode`, id from :func:`wandb_run_id`, files under output_dir; None under ``WANDB_MODE=disabled``.
    The axes are WandbLogger's (every key against ``trainer/global_step``); the summaries come as the metrics are
    logged (:meth:`WandbRun.declare`). ``eval_only`` (``ois eval``): a run of its own (``<name>-eval``, job type eval, in
    the training run's group; the training run id is left alone)."""
    mode = wandb_mode()
    if mode == "disabled":
        return None
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    project, group, name, tags = run_identity(cfg)  # table / row / seed (identity.py)
    run_id = None if eval_only else wandb_run_id(cfg)
    role = dict(name=f"{name}-eval", tags=tags + ["eval"], job_type="eval") if eval_only else dict(name=name, tags=tags)
    # resume only with an id: W&B's resume="allow" without one would attach to the last run in dir
    run = wandb.init(project=project, group=group, dir=str(out), mode=mode, id=run_id,
                     resume="allow" if run_id else None, **role)
    run.define_metric(STEP)
    run.define_metric("*", step_metric=STEP, step_sync=True)
    if not eval_only:
        atomic_write(out / WANDB_RUN_ID, lambda f: f.write(run.id))
    return run


class Sink(Protocol):
    """What the logging functions need of a logger: Lightning's loggers, :class:`WandbRun` and
    :class:`~ois_lightning.tracking.csv_log.CSVLog` have it."""

    def log_hyperparams(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None: ...

    def save(self) -> None: ...


class WandbRun:
    """A started W&B run as a :class:`Sink`, logging as Lightning's WandbLogger does (the step as
    ``trainer/global_step`` beside the metrics, hyperparameters into the run config) and with W&B's step set to
    the global step. One per run: it remembers which metrics it has declared."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.declared: set[str] = set()

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        """Into the run config, then :meth:`keep_resolved`."""
        self.run.config.update(params, allow_val_change=True)
        self.keep_resolved(params)

    def keep_resolved(self, params: dict[str, Any]) -> None:
        """A key the sweep locked keeps the sweep's value in the config (W&B ignores the update, and its grid
        search finds a point's runs by those values), e.g. ``output_dir: runs/${table}/${row}/seed${seed}``; where
        that differs from the value the run used, the run's value goes to ``resolved.<key>``."""
        kept = {k: v for k, v in params.items() if k in self.run.config and self.run.config[k] != v}
        if kept:
            self.run.config.update({RESOLVED: kept}, allow_val_change=True)

    def declare(self, keys: Sequence[str]) -> None:
        """Give each table metric among ``keys`` (``val/NoC90``, ``test/5-mIoU``, ``test/<dataset>/NoF95``, ...)
        its summary the first time it is logged: the minimum for NoC/NoF, the maximum for k-mIoU, so the
        dashboard and the sweep rank runs the right way."""
        for key in keys:
            goal = METRIC_GOALS.get(key.rsplit("/", 1)[-1])
            if goal is not None and key not in self.declared:
                self.run.define_metric(key, step_metric=STEP, step_sync=True, summary="min" if goal == "lower" else "max")
                self.declared.add(key)

    def log_metrics(self, metrics: dict[str, Any], step: int | None) -> None:
        """W&B's own step is the global step too: a resumed run (offline: a new ``offline-run-*`` folder with the
        same id) continues the step axis where its checkpoint stopped instead of restarting at 0."""
        self.declare(list(metrics))
        if step is None:
            self.run.log(dict(metrics))
        else:
            self.run.log({**metrics, STEP: step}, step=int(step))

    def save(self) -> None:
        """Nothing to flush: W&B writes as it logs."""


def finish_preempted(loggers: Sequence[Sink], exit_code: int) -> None:
    """Tell W&B that a run stopped by SIGTERM was preempted (``mark_preempting``) and finish it with
    ``exit_code``, so its id is released at once for the resumed run instead of when the process is gone."""
    for logger in loggers:
        if isinstance(logger, WandbRun):
            logger.run.mark_preempting()
            logger.run.finish(exit_code=exit_code)


def eval_logger(cfg: DictConfig) -> Sink | None:
    """The logger of ``ois eval`` for ``logger.kind``: wandb (:func:`start_run` with ``eval_only``; None under
    ``WANDB_MODE=disabled``), csv (``<output_dir>/csv_eval/version_N/``, Lightning's CSVLogger layout) or None."""
    kind = cfg.logger.kind.value
    if kind == "csv":
        return CSVLog(Path(cfg.output_dir) / "csv_eval")
    run = start_run(cfg, eval_only=True) if kind == "wandb" else None
    return None if run is None else WandbRun(run)


def parameter_counts(model: nn.Module) -> dict[str, dict[str, int]]:
    """Total and trainable parameters of the whole model (``all``) and of each part (its named children)."""
    def count(module: nn.Module) -> dict[str, int]:
        params = list(module.parameters())
        return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}

    return {"all": count(model), **{name: count(child) for name, child in model.named_children()}}


def log_parameter_counts(loggers: Sequence[Sink], model: nn.Module) -> None:
    """:func:`parameter_counts` as ``params`` in each logger's run config (hparams)."""
    for logger in loggers:
        logger.log_hyperparams({"params": parameter_counts(model)})


# ---------------------------------------------------------------------------- images (drawn by drawing.py)


def _masks(gt: np.ndarray, pred: np.ndarray) -> dict:
    """W&B mask overlays: the ground truth (object, ignored pixels) and the final prediction."""
    truth = np.where(gt == 1, 1, np.where(gt < 0, 2, 0)).astype(np.uint8)
    return {"ground_truth": {"mask_data": truth, "class_labels": {1: "object", 2: "ignore"}},
            "prediction": {"mask_data": pred.astype(np.uint8), "class_labels": {1: "object"}}}


def render_object(predictor: Predictor, sample: Sample, k: int, budget: ClickBudget,
                  order: bool = False) -> list[wandb.Image]:
    """The protocol on object ``k`` of ``sample`` again (its clicks and final prediction) -> the image with the
    clicks and the ground-truth / prediction masks; with ``order`` also the first click's order map."""
    predictor.set_image(sample)
    run = run_object(predictor, sample.masks[k], budget)
    caption = f"{sample.id}#{k}: {len(run.clicks)} clicks, IoU {100 * run.curve[-1]:.1f}"
    images = [wandb.Image(draw_clicks(sample.image, run.clicks), masks=_masks(sample.masks[k], run.pred),
                          caption=caption)]
    order_map = first_click_order_map(predictor, run.clicks[0]) if order else None
    if order_map is not None:
        images.append(wandb.Image(draw_clicks(order_map_image(order_map), run.clicks[:1]),
                                  caption=f"{sample.id}#{k}: order map of click 1 (dark = same depth as the click)"))
    return images


def dataset_objects(dataset: Any, wanted: set[str] | None = None) -> Iterator[tuple[Sample, int]]:
    """(sample, object index) in dataset order: every object, or those whose id ``<sample id>#<k>`` is in
    ``wanted`` (stops once all are found)."""
    left = None if wanted is None else set(wanted)
    for i in range(len(dataset)):
        if left is not None and not left:
            return
        sample = dataset[i]
        for k in range(len(sample.masks)):
            if left is None or f"{sample.id}#{k}" in left:
                yield sample, k
                if left is not None:
                    left.discard(f"{sample.id}#{k}")


def log_validation(loggers: Sequence[Sink], model: nn.Module, dataset: Any, cfg: DictConfig, step: int) -> None:
    """The first ``logger.log_images`` validation objects, clicked through the protocol with the current
    weights: ``val/examples`` (image, clicks, masks) and ``val/order_maps`` (first click), on W&B runs."""
    targets = [logger for logger in loggers if isinstance(logger, WandbRun)]
    if not targets or cfg.logger.log_images <= 0:
        return
    predictor = predictor_for(model, cfg)
    examples: list[wandb.Image] = []
    orders: list[wandb.Image] = []
    for _, (sample, k) in zip(range(cfg.logger.log_images), dataset_objects(dataset)):
        image, *order = render_object(predictor, sample, k, ClickBudget(cfg.clicks.max_eval), order=True)
        examples.append(image)
        orders += order
    logged = {"val/examples": examples, **({"val/order_maps": orders} if orders else {})}
    for logger in targets:
        logger.log_metrics(logged, step=step)
