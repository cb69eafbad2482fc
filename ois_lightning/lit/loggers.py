"""Lightning's loggers for ``ois train`` (``logger.kind``): the W&B run comes from
``ois_lightning/tracking/wandb_run.py``, which holds every direct W&B call; here it is only wrapped in Lightning's
WandbLogger for the Trainer."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from ..tracking.wandb_run import Sink, WandbRun, start_run, wandb_mode


class StepWandbLogger(WandbLogger):
    """Lightning's WandbLogger logging through :class:`WandbRun`, so W&B's step is the global step and a resumed
    run's charts continue where its checkpoint stopped."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        WandbRun(self.experiment).log_metrics(dict(metrics), step)


def build_logger(cfg: DictConfig) -> Logger | bool:
    """The training logger of ``logger.kind``: wandb (the run of :func:`start_run`, started on rank 0 only; none at
    all under ``WANDB_MODE=disabled``), csv (``<output_dir>/csv/version_N/``) or none (False)."""
    kind = cfg.logger.kind.value
    if kind == "csv":
        return CSVLogger(save_dir=str(cfg.output_dir), name="csv")
    if kind != "wandb" or wandb_mode() == "disabled":
        return False
    run = start_run(cfg) if rank_zero_only.rank == 0 else None  # other ranks: Lightning's dummy experiment
    return StepWandbLogger(save_dir=str(cfg.output_dir), experiment=run)


def sinks(loggers: Sequence[Logger]) -> list[Sink]:
    """The loggers as the tracking layer takes them: a WandbLogger as the :class:`WandbRun` of its run, the others
    as they are; none off rank 0 (Lightning's loggers log from rank 0 only)."""
    if rank_zero_only.rank != 0:
        return []
    return [WandbRun(logger.experiment) if isinstance(logger, WandbLogger) else logger for logger in loggers]
