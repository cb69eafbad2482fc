"""``ois train`` / ``ois eval``: Lightning Trainer, checkpoints, resume and loggers from the config; the final
evaluation on ``data.test`` writes ``<output_dir>/results.json`` per test dataset (schema in docs/training.md)."""
from __future__ import annotations

import pickle
import secrets
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from ..atomic import atomic_write
from ..check_data import check_splits
from ..config import ConfigError, to_dict
from ..data.splits import build_split
from ..evaluate import TABLE_COLUMNS, EvalResult, evaluate, table_row, write_results
from ..grid import run_identity, wandb_offline
from ..model import OISModel, build_model
from ..model.checkpoints import CheckpointError
from ..table import results_paths
from .datamodule import EpochEndWarnings, OISDataModule
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


WANDB_RUN_ID = "wandb_run_id"  # in output_dir: the W&B run a resumed training continues
EVAL_JOURNAL = "eval_journal.jsonl"  # beside results.json while the evaluation runs


def wandb_run_id(cfg: DictConfig) -> str:
    """The W&B run id of this run: when resuming (``ckpt_path`` set) the id saved in ``<output_dir>/wandb_run_id``
    by the run being resumed, so its charts continue; otherwise a new id, saved there (by rank 0) for later."""
    path = Path(cfg.output_dir) / WANDB_RUN_ID
    if cfg.ckpt_path is not None and path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # 8 lowercase characters, like W&B's own ids
    if rank_zero_only.rank == 0:
        atomic_write(path, lambda f: f.write(run_id))
    return run_id


def build_logger(cfg: DictConfig, eval_only: bool = False) -> Logger | bool:
    """The logger of ``logger.kind``: wandb (project/group/name/tags from :func:`run_identity`; a resumed run
    continues its W&B run, :func:`wandb_run_id`), csv, or none. ``eval_only`` (``ois eval``): a W&B run of its
    own (``<name>-eval``, job type eval, in the training run's group; the training run id is left alone), or
    ``csv_eval/``."""
    kind = cfg.logger.kind.value
    out = Path(cfg.output_dir)
    if kind == "wandb":
        out.mkdir(parents=True, exist_ok=True)
        project, group, name, tags = run_identity(cfg)  # table / row / seed (grid.py)
        if eval_only:
            return WandbLogger(name=f"{name}-eval", project=project, group=group, tags=tags + ["eval"],
                               save_dir=str(out), offline=wandb_offline(), job_type="eval")
        return WandbLogger(name=name, project=project, group=group, tags=tags, save_dir=str(out),
                           offline=wandb_offline(), id=wandb_run_id(cfg), resume="allow")
    if kind == "csv":
        return CSVLogger(save_dir=str(out), name="csv_eval" if eval_only else "csv")
    return False


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``: None (fresh run), "last" (<output_dir>/checkpoints/last.ckpt) or a file."""
    if cfg.ckpt_path is None:
        return None
    path = Path(cfg.output_dir) / "checkpoints" / "last.ckpt" if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: checkpoint {path} not found (expected a .ckpt file)")
    return str(path)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer of ``train.*``: ``last.ckpt`` checkpoints, epoch-end data warnings and, with a logger, the
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
        logger=logger, default_root_dir=cfg.output_dir,
        callbacks=[Checkpoint(dirpath=Path(cfg.output_dir) / "checkpoints", save_last=True,
                              every_n_train_steps=steps, enable_version_counter=False),  # always last.ckpt
                   EpochEndWarnings(), *monitor],
    )


def finish(model: OISModel, cfg: DictConfig) -> dict[str, EvalResult]:
    """Evaluate on each ``data.test`` dataset on its own, write its results.json + plot (:func:`results_paths`)
    and print one table row per dataset. Finished images are journaled beside results.json until it is written,
    so a rerun after an interruption (``ois eval`` again, or ``ois train ... ckpt_path=last``) evaluates only
    the rest."""
    results = {}
    for name, path in results_paths(cfg.output_dir, list(cfg.data.test)).items():
        journal = path.parent / EVAL_JOURNAL  # finished images; an interrupted evaluation resumes from it
        results[name] = evaluate(model, build_split(cfg, name, "test"), cfg, journal=journal)
        print(f"wrote {write_results(results[name], path.parent, cfg, name)}")
        journal.unlink(missing_ok=True)
    print("| dataset | " + " | ".join(TABLE_COLUMNS) + " |")
    for name, result in results.items():
        print(f"| {name} {table_row(result.summary)}")
    return results


def train(cfg: DictConfig) -> dict[str, EvalResult] | None:
    """Fit (resuming from ``ckpt_path``), then evaluate the final weights on data.test on rank 0. Every split is
    built first (``train.check_data``: :func:`check_splits`), so missing files fail before a model is built."""
    ckpt_path = resolve_ckpt_path(cfg)
    if cfg.train.check_data:
        check_splits(cfg)
    L.seed_everything(cfg.seed, workers=True)
    module = OISLitModule(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=OISDataModule(cfg), ckpt_path=ckpt_path)
    if not trainer.is_global_zero:
        return None
    results = finish(module.model.to(trainer.strategy.root_device), cfg)
    for logger in trainer.loggers:  # the test numbers next to the training curves
        log_test(logger, results, cfg, trainer.global_step)
    return results


def log_test(logger: Logger, results: dict[str, EvalResult], cfg: DictConfig, step: int) -> None:
    """Each dataset's summary as ``test/<metric>`` (``test/<dataset>/<metric>`` with several; metrics an early
    stop left undetermined are skipped) and, on W&B, its mIoU-vs-clicks plot; then the logger is closed."""
    paths = results_paths(cfg.output_dir, list(results))
    for name, result in results.items():
        prefix = "test/" if len(results) == 1 else f"test/{name}/"
        logger.log_metrics({prefix + k: v for k, v in result.summary.items() if v is not None}, step=step)
        if isinstance(logger, WandbLogger):
            logger.log_image(key=prefix + "miou_vs_clicks", images=[str(paths[name].parent / "miou_vs_clicks.png")],
                             step=step)
    logger.save()
    if isinstance(logger, WandbLogger):
        logger.experiment.finish()  # close the run, so another run can start in this process


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


def warn_input_size(checkpoint: dict, cfg: DictConfig) -> None:
    """One line on stderr when the checkpoint was trained at another ``model.input_size`` (its saved config,
    ``hyper_parameters``) than the one evaluated now."""
    trained = checkpoint.get("hyper_parameters", {}).get("model", {}).get("input_size")
    if trained is not None and int(trained) != int(cfg.model.input_size):
        print(f"ois: warning: ckpt={cfg.ckpt} was trained at model.input_size={trained} but is evaluated at "
              f"model.input_size={cfg.model.input_size}", file=sys.stderr)


def load_weights(cfg: DictConfig) -> OISModel:
    """OISModel of ``cfg.model`` with the weights of the Lightning checkpoint ``cfg.ckpt`` (random init if unset)."""
    model = build_model(cfg.model, cfg.data.depth)
    if cfg.ckpt is None:
        print("ois eval: ckpt is not set: evaluating the RANDOMLY INITIALISED model")
        return model
    path = Path(cfg.ckpt)
    if not path.is_file():
        raise ConfigError(f"ckpt={cfg.ckpt}: file not found (expected a Lightning .ckpt from `ois train`)")
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ConfigError(f"ckpt={cfg.ckpt}: no 'state_dict' in the file (expected a Lightning .ckpt)")
    warn_input_size(checkpoint, cfg)
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ConfigError(f"ckpt={cfg.ckpt}: weights do not fit model config ({first})") from None
    return model


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, EvalResult]:
    """``ois eval``: weights from cfg.ckpt, evaluated on data.test; the numbers (and plots) go to the logger of
    ``logger.kind`` as an evaluation run (:func:`build_logger` with ``eval_only``)."""
    torch.manual_seed(cfg.seed)
    model = load_weights(cfg)
    use_gpu = torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda")
    results = finish(model.to("cuda" if use_gpu else "cpu"), cfg)
    logger = build_logger(cfg, eval_only=True)
    if logger:
        logger.log_hyperparams(to_dict(cfg))
        log_test(logger, results, cfg, step=0)
    return results
