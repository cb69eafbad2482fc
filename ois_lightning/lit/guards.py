"""A run is finished only if it trained: :class:`TrainingGuard` stops ``ois train`` with one line (a
:class:`TrainingError`, exit code 2, no results.json) when there is nothing to train or the loss is not finite."""
from __future__ import annotations

import math

import lightning as L
import torch

from ..config.schema import ConfigError
from .datamodule import OISDataModule


class TrainingError(ConfigError):
    """The run did not train (no steps, no batches, a non-finite loss) or cannot keep its checkpoints."""


class Preempted(RuntimeError):
    """``ois train`` was stopped by SIGTERM (SLURM preemption, ``scancel``, a time limit): its last.ckpt holds
    the last finished step; ``ois`` prints the message and exits 143 (128 + SIGTERM), so ``&&`` chains and
    schedulers see a stop, not a success."""

    label = "preempted"
    exit_code = 143


class TrainingGuard(L.Callback):
    """Refuses, before the first step, a fit with no optimizer step to make (``train.max_epochs=0``,
    ``train.max_steps=0``, fewer training samples than one batch); stops at the first step whose loss is NaN or
    inf (checked before its backward, so no non-finite gradient is applied or checkpointed; the decision is
    reduced over the processes, so every rank stops together); and refuses a fit that ends at global step 0."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        zero = [f"train.{key}=0" for key in ("max_epochs", "max_steps") if getattr(trainer, key) == 0]
        if zero:
            raise TrainingError(f"{' '.join(zero)}: nothing to train (a positive number, or -1 for no limit)")
        datamodule = trainer.datamodule
        if isinstance(datamodule, OISDataModule) and datamodule.steps_per_epoch() == 0:
            cfg = datamodule.cfg
            raise TrainingError(f"No training batches: data.train={list(cfg.data.train)} holds "
                                f"{len(datamodule.train_set)} samples, fewer than one batch per process "
                                f"(data.batch_size={cfg.data.batch_size} over {trainer.world_size})")

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite = trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss).all()), all=True)
        if not finite:
            value = float(loss.detach().float().mean())
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            shown = "not finite on another process" if math.isfinite(value) else str(value)
            raise TrainingError(f"train/loss is {shown} at step {trainer.global_step} (epoch "
                                f"{trainer.current_epoch}): training diverged; lower train.lr (now {lr:g}) or set "
                                "train.gradient_clip_val")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:
            raise TrainingError("training ended after 0 optimizer steps: the weights are untrained")
