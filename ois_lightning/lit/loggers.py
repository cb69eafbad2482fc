"""Lightning's loggers for ``ois train`` (``logger.kind``): the W&B run comes from
``ois_lightning/tracking/wandb_run.py``, which holds every direct W&B call; here it is only wrapped in Lightning's
WandbLogger for the Trainer."""
from __future__ import annotations

from argparse import Namespace
from typing import Any, Mapping, Optional, Sequence

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from ..tracking.wandb_run import Sink, WandbRun, start_run, wandb_mode


class StepWandbLogger(WandbLogger):
    """Lightning's WandbLogger logging through one :class:`WandbRun` (:attr:`sink`), so W&B's step is the global
    step (a resumed run's charts continue where its checkpoint stopped), a metric's summary is declared when it is
    first logged, and config keys a sweep locked get their resolved value beside them."""

    _sink: Optional[WandbRun] = None

    @property
    def sink(self) -> WandbRun:
        """The :class:`WandbRun` of this logger's run (rank 0)."""
        if self._sink is None:
            self._sink = WandbRun(self.experiment)
        return self._sink

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        """Lightning's conversions and config update, then :meth:`WandbRun.keep_resolved`."""
        super().log_hyperparams(params)
        self.sink.keep_resolved(vars(params) if isinstance(params, Namespace) else dict(params))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        self.sink.log_metrics(dict(metrics), step)


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
    """The loggers as the tracking layer takes them: our WandbLogger as its :attr:`StepWandbLogger.sink`, the
    others as they are; none off rank 0 (Lightning's loggers log from rank 0 only)."""
    if rank_zero_only.rank != 0:
        return []
    return [logger.sink if isinstance(logger, StepWandbLogger) else logger for logger in loggers]


def metrics_step(trainer: L.Trainer) -> int:
    """The step Lightning gives the metrics ``self.log`` records (its logger connector's default step: the fit
    loop's count of batches that stepped, lightning ``trainer/connectors/logger_connector/logger_connector.py``).
    During validation inside ``fit`` that is one less than ``trainer.global_step``: the optimizer has stepped,
    the count is raised after validation."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped
