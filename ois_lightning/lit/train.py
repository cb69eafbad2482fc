"""``ois train`` / ``ois eval``: Lightning Trainer, checkpoints, resume and loggers from the config; the final
evaluation on ``data.test`` writes ``<output_dir>/results.json`` per test dataset (schema in docs/training.md)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig

from ..check_data import check_splits
from ..config import ConfigError, check_checkpoint_config, to_dict
from ..data.splits import build_split
from ..evaluate import TABLE_COLUMNS, EvalResult, evaluate, table_row, write_results
from ..lock import locks_output_dir
from ..model import OISModel, build_model
from ..model.checkpoints import CheckpointError
from ..parallel import barrier, local_processes, process_group_from_env, rank_path, set_threads, world
from ..table import results_paths
from ..tracking import build_logger, log_parameter_counts, log_test
from .checkpointing import LAST, AtomicCheckpointIO, checkpoint_dir, prepare_checkpoint_dir, resume_path
from .datamodule import EpochEndWarnings, OISDataModule
from .guards import TrainingGuard
from .module import OISLitModule


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves (and updates last.ckpt) on the batch that reaches ``max_steps``.

    Lightning otherwise saves a run stopped by max_steps in the middle of an epoch at that epoch's end, and a
    resume from it would skip the rest of the epoch (or stop at once when max_epochs is 1); saved on the batch,
    ``ckpt_path=last`` continues the epoch at the next step.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
                           ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if 0 < trainer.max_steps <= trainer.global_step and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)


EVAL_JOURNAL = "eval_journal.jsonl"  # beside results.json while the evaluation runs


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


def finish(model: OISModel, cfg: DictConfig) -> dict[str, EvalResult]:
    """Evaluate on each ``data.test`` dataset on its own, write its results.json + plot (:func:`results_paths`)
    and print one table row per dataset. Under a process group every rank calls this: the images are sharded
    over the ranks (:func:`evaluate`), every rank gets the whole result and rank 0 writes and prints. Finished
    images are journaled beside results.json (one journal per rank) until it is written, so a rerun after an
    interruption (``ois eval`` again, or ``ois train ... ckpt_path=last``) evaluates only the rest."""
    results = {}
    rank = world()[0]
    for name, path in results_paths(cfg.output_dir, list(cfg.data.test)).items():
        journal = path.parent / EVAL_JOURNAL  # finished images; an interrupted evaluation resumes from it
        results[name] = evaluate(model, build_split(cfg, name, "test"), cfg, journal=journal)
        if rank == 0:
            print(f"wrote {write_results(results[name], path.parent, cfg, name)}")
        barrier()  # results.json is in place before any rank drops its journal
        rank_path(journal).unlink(missing_ok=True)
    if rank != 0:
        return results
    print("| dataset | " + " | ".join(TABLE_COLUMNS) + " |")
    for name, result in results.items():
        print(f"| {name} {table_row(result.summary)}")
    return results


@locks_output_dir("ois train")
def train(cfg: DictConfig) -> dict[str, EvalResult] | None:
    """Fit (resuming from ``ckpt_path``), then evaluate the final weights on data.test, sharded over the ranks
    (:func:`finish`); rank 0 returns the results. Every split is built first (``train.check_data``:
    :func:`check_splits`), so missing files fail before a model is built. ``train.threads`` sets torch's threads."""
    set_threads(cfg.train.threads, local_processes(cfg.train.devices, cfg.train.accelerator))
    prepare_checkpoint_dir(cfg.output_dir)  # an unwritable output_dir fails here, not at the first save
    ckpt_path = resolve_ckpt_path(cfg)
    if cfg.train.check_data:
        check_splits(cfg)
    L.seed_everything(cfg.seed, workers=True)
    module = OISLitModule(cfg)
    trainer = build_trainer(cfg)
    log_parameter_counts(trainer.loggers, module.model)
    trainer.fit(module, datamodule=OISDataModule(cfg), ckpt_path=ckpt_path)
    results = finish(module.model.to(trainer.strategy.root_device), cfg)  # every rank: Lightning's process group
    if not trainer.is_global_zero:
        return None
    for logger in trainer.loggers:  # the test numbers next to the training curves
        log_test(logger, results, cfg, trainer.global_step, module.model)
    return results


def read_checkpoint(path: Path) -> dict:
    """The dict a checkpoint file holds; an empty, truncated or non-checkpoint file is a CheckpointError."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"ckpt={path}: cannot read the file ({reason}); expected a Lightning .ckpt from "
                              "`ois train` (empty or truncated?)") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"ckpt={path}: holds a {type(checkpoint).__name__} (expected a Lightning .ckpt dict)")
    return checkpoint


def load_weights(cfg: DictConfig) -> OISModel:
    """OISModel of ``cfg.model`` with the weights of the Lightning checkpoint ``cfg.ckpt``, whose saved config
    must agree on the model and protocol keys (``check_checkpoint_config``); random weights only without a
    ckpt and with ``model.backbone.random_init=true``."""
    if cfg.ckpt is None and not cfg.model.backbone.random_init:
        raise ConfigError("ckpt is not set: `ois eval` evaluates ckpt=PATH (a Lightning .ckpt from `ois train`); "
                          "model.backbone.random_init=true evaluates a randomly initialised model")
    model = build_model(cfg.model, cfg.data.depth)
    if cfg.ckpt is None:
        print("ois eval: ckpt is not set: evaluating the RANDOMLY INITIALISED model (model.backbone.random_init)")
        return model
    path = Path(cfg.ckpt)
    if not path.is_file():
        raise ConfigError(f"ckpt={cfg.ckpt}: file not found (expected a Lightning .ckpt from `ois train`)")
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ConfigError(f"ckpt={cfg.ckpt}: no 'state_dict' in the file (expected a Lightning .ckpt)")
    stored = checkpoint.get("hyper_parameters")
    check_checkpoint_config(stored if isinstance(stored, dict) else None, cfg)
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ConfigError(f"ckpt={cfg.ckpt}: weights do not fit model config ({first})") from None
    return model


@locks_output_dir("ois eval")
def evaluate_checkpoint(cfg: DictConfig) -> dict[str, EvalResult]:
    """``ois eval``: weights from cfg.ckpt, evaluated on data.test; the numbers (and plots) go to the logger of
    ``logger.kind`` as an evaluation run (:func:`build_logger` with ``eval_only``). Under torchrun the images
    are sharded over the processes (:func:`process_group_from_env`) and rank 0 writes and logs.
    ``eval.threads`` sets torch's threads."""
    set_threads(cfg.eval.threads, local_processes())
    torch.manual_seed(cfg.seed)
    model = load_weights(cfg)
    with process_group_from_env(cfg.train.accelerator) as device:
        results = finish(model.to(device), cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: only rank 0 logs
        return results
    logger = build_logger(cfg, eval_only=True)
    if logger:
        logger.log_hyperparams(to_dict(cfg))
        log_parameter_counts([logger], model)
        log_test(logger, results, cfg, step=0, model=model)
    return results
