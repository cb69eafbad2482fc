"""Seconds of real Lightning training steps (training_step + backward + Adam), for ``ois bench``."""
from __future__ import annotations

import statistics
import tempfile
import time

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig

from ..utils.measure import PeakMemory, sync
from .datamodule import OISDataModule
from .module import OISLitModule


class StepTimer(L.Callback):
    """Seconds of each training batch and the click rounds simulated in it (forward calls minus the trained one)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.rounds: list[int] = []
        self.calls = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        sync(pl_module.device)
        self.calls = 0
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        sync(pl_module.device)
        self.times.append(time.perf_counter() - self.start)
        self.rounds.append(self.calls - 1)  # forward calls minus the trained one = simulated rounds


def time_training_steps(cfg: DictConfig, device: torch.device) -> dict:
    """Median and mean seconds of the ``train.max_steps`` steps of ``cfg`` on ``device`` (the first two are
    warm-up), the simulated click rounds per step and the peak memory."""
    steps = int(cfg.train.max_steps)
    timer = StepTimer()
    L.seed_everything(cfg.seed, verbose=False)
    module = OISLitModule(cfg)
    module.model.register_forward_hook(lambda *_: setattr(timer, "calls", timer.calls + 1))
    with tempfile.TemporaryDirectory(prefix="ois_bench_") as root, PeakMemory(device) as mem:
        trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                            max_steps=steps, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0, callbacks=[timer], default_root_dir=root)
        trainer.fit(module, datamodule=OISDataModule(cfg))
    skip = min(2, len(timer.times) - 1)  # warm-up steps
    return {"step_s": statistics.median(timer.times[skip:]), "mean_step_s": float(np.mean(timer.times[skip:])),
            "mean_rounds": float(np.mean(timer.rounds[skip:])), "steps": len(timer.times) - skip,
            "batch_size": int(cfg.data.batch_size), "input_size": int(cfg.model.input_size), "peak_mb": mem.mb,
            "max_extra": int(cfg.clicks.max_extra)}


