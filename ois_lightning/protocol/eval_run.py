"""``ois eval`` without Lightning, and the final evaluation ``ois train`` shares with it (docs/training.md).

- :func:`load_weights`: an :class:`OISModel` of ``cfg.model`` with the weights of a Lightning ``.ckpt`` (a torch
  pickle: ``state_dict`` with the network's keys prefixed ``model.``, the resolved config under
  ``hyper_parameters``, which must agree with the given one: :func:`check_checkpoint_config`).
- :func:`evaluate_test_splits`: the interactive protocol (:func:`evaluate`) on each ``data.test`` dataset on its
  own, the images sharded over the ranks of a process group (``ois_lightning/utils/parallel.py``); one results.json
  each and the paper's table row per dataset.
- :func:`evaluate_checkpoint`: ``ois eval``: both, under torchrun too, then the numbers to the tracker of
  ``logger.kind`` (``ois_lightning/tracking/wandb_run.py``).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..config.schema import ConfigError, to_dict
from ..config.checks import check_checkpoint_config
from ..data.splits import build_split
from .evaluate import TABLE_COLUMNS, EvalResult, evaluate, table_row, write_results
from ..utils.lock import locks_output_dir
from ..model import OISModel, build_model
from ..model.checkpoints import CheckpointError
from ..utils.parallel import barrier, local_processes, process_group_from_env, rank_path, set_threads, world
from .results import results_paths

EVAL_JOURNAL = "eval_journal.jsonl"  # beside results.json while the evaluation runs
PREFIX = "model."  # OISLitModule keeps the network as `self.model`


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
    weights = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ConfigError(f"ckpt={cfg.ckpt}: weights do not fit model config ({first})") from None
    return model


def evaluate_test_splits(model: OISModel, cfg: DictConfig) -> dict[str, EvalResult]:
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


@locks_output_dir("ois eval")
def evaluate_checkpoint(cfg: DictConfig) -> dict[str, EvalResult]:
    """``ois eval``: weights from cfg.ckpt (:func:`load_weights`), evaluated on data.test; the numbers (and plots)
    go to the tracker of ``logger.kind`` as an evaluation run of its own (``tracking.eval_logger``). Under
    torchrun the images are sharded over the processes (:func:`process_group_from_env`) and rank 0 writes and
    logs. ``eval.threads`` sets torch's threads."""
    from ..tracking.wandb_run import eval_logger, log_parameter_counts, log_test  # W&B: not for other load_weights users

    set_threads(cfg.eval.threads, local_processes())
    torch.manual_seed(cfg.seed)
    model = load_weights(cfg)
    with process_group_from_env(cfg.train.accelerator) as device:
        results = evaluate_test_splits(model.to(device), cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: only rank 0 logs
        return results
    logger = eval_logger(cfg)
    if logger is not None:
        logger.log_hyperparams(to_dict(cfg))
        log_parameter_counts([logger], model)
        log_test(logger, results, cfg, step=0, model=model)
    return results
