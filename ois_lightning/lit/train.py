"""``ois train``: Lightning Trainer, checkpoints, resume and loggers from the config; the final evaluation on
``data.test`` (``ois_lightning/protocol/eval_run.py``, shared with ``ois eval``) writes
``<output_dir>/results.json`` per test dataset (schema in docs/evaluation.md)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from ..data.check import check_splits
from ..config.schema import ConfigError
from ..protocol.eval_run import evaluate_test_splits
from ..protocol.evaluate import EvalResult
from ..utils.lock import launching_rank, locks_output_dir
from ..utils.parallel import local_processes, set_threads
from ..tracking.wandb_results import log_test
from ..tracking.wandb_run import finish_preempted, log_parameter_counts
from ..protocol.results import LAST, checkpoint_dir
from ..protocol.run_folder import claim
from .checkpointing import AtomicCheckpointIO, prepare_checkpoint_dir, resume_path
from .datamodule import EpochEndWarnings, OISDataModule
from .guards import Preempted, TrainingGuard
from .loggers import build_logger, sinks
from .module import OISLitModule


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves (and updates last.ckpt) on the batch that reaches ``max_steps`` and on the
    batch during which SIGTERM arrived.

    Lightning otherwise saves a run stopped by max_steps in the middle of an epoch at that epoch's end, and a
    resume from it would skip the rest of the epoch (or stop at once when max_epochs is 1); saved on the batch,
    ``ckpt_path=last`` continues the epoch at the next step. On SIGTERM Lightning's signal connector sets
    ``trainer.received_sigterm`` and its loop stops after this batch (``SIGTERMException``); saved here, like
    every periodic checkpoint, the resume is exact.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
                           ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        stop = 0 < trainer.max_steps <= trainer.global_step or trainer.received_sigterm
        if stop and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``: None (fresh run), "last" (<output_dir>/checkpoints/last.ckpt; when that is unreadable, the
    newest readable checkpoint beside it: :func:`resume_path`) or a file."""
    if cfg.ckpt_path is None:
        return None
    last = cfg.ckpt_path == "last"
    path = checkpoint_dir(cfg.output_dir) / LAST if last else Path(cfg.ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: checkpoint {path} not found (expected a .ckpt file)")
    return str(resume_path(path.parent) if last else path)


def preempted_message(cfg: DictConfig, trainer: L.Trainer) -> str:
    """What a SIGTERM left: the step of last.ckpt and how to resume, or that no checkpoint was written yet."""
    last = checkpoint_dir(cfg.output_dir) / LAST
    if not last.is_file():
        return f"stopped by SIGTERM at step {trainer.global_step} before the first checkpoint; rerun to start over"
    return (f"stopped by SIGTERM at step {trainer.global_step}; {last} holds the last saved step: rerun with "
            "ckpt_path=last to resume it exactly")


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer of ``train.*``: ``last.ckpt`` checkpoints written atomically (:class:`AtomicCheckpointIO`), the
    checks that the run trains (:class:`TrainingGuard`), epoch-end data warnings and, with a logger, the
    learning rate logged every step (``lr-Adam``)."""
    t = cfg.train
    steps = t.val_every_n_steps
    logger = build_logger(cfg)
    monitor = [LearningRateMonitor(logging_interval="step")] if logger and not t.fast_dev_run else []
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=t.precision, max_steps=t.max_steps, max_epochs=t.max_epochs,
        log_every_n_steps=t.log_every_n_steps, gradient_clip_val=t.gradient_clip_val, fast_dev_run=t.fast_dev_run,
        val_check_interval=steps, check_val_every_n_epoch=None if steps else 1,
        logger=logger, default_root_dir=cfg.output_dir, plugins=[AtomicCheckpointIO()],
        callbacks=[Checkpoint(dirpath=checkpoint_dir(cfg.output_dir), save_last=True,
                              every_n_train_steps=steps, enable_version_counter=False),  # always last.ckpt
                   TrainingGuard(), EpochEndWarnings(), *monitor],
    )


@locks_output_dir("ois train")
def train(cfg: DictConfig) -> dict[str, EvalResult] | None:
    """Fit (resuming from ``ckpt_path``), then evaluate the final weights on data.test, sharded over the ranks
    (:func:`evaluate_test_splits`); rank 0 returns the results. Every split is built first (``train.check_data``:
    :func:`check_splits`), so missing files fail before a model is built. ``train.threads`` sets torch's threads.
    The output folder is claimed first (:func:`claim`): a run of other settings there is never overwritten."""
    # the count used is recorded (results.json config): another count rounds differently (docs/training.md)
    cfg.train.threads = set_threads(cfg.train.threads, local_processes(cfg.train.devices, cfg.train.accelerator))
    if launching_rank():  # the folder is this run's: other settings or a finished run are refused (run_folder.py)
        moved = claim(cfg)
        if moved is not None:
            print(f"ois train: restart=true: the previous run of {cfg.output_dir} moved to {moved}")
    prepare_checkpoint_dir(cfg.output_dir)  # an unwritable output_dir fails here, not at the first save
    ckpt_path = resolve_ckpt_path(cfg)
    if cfg.train.check_data:
        check_splits(cfg)
    L.seed_everything(cfg.seed, workers=True)
    module = OISLitModule(cfg)
    trainer = build_trainer(cfg)
    log_parameter_counts(sinks(trainer.loggers), module.model)
    try:
        trainer.fit(module, datamodule=OISDataModule(cfg), ckpt_path=ckpt_path)
    except SIGTERMException:
        finish_preempted(sinks(trainer.loggers), Preempted.exit_code)
        raise Preempted(preempted_message(cfg, trainer)) from None
    model = module.model.to(trainer.strategy.root_device)
    results = evaluate_test_splits(model, cfg)  # on every rank: sharded over Lightning's process group
    if not trainer.is_global_zero:
        return None
    last = checkpoint_dir(cfg.output_dir) / LAST  # saved on the final batch (Checkpoint)
    for logger in sinks(trainer.loggers):  # the test numbers next to the training curves
        log_test(logger, results, cfg, trainer.global_step, model, last if last.is_file() else None)
    return results
