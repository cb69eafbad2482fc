"""``ois eval`` without Lightning, and the final evaluation ``ois train`` shares with it (docs/evaluation.md).

- :func:`evaluate_test_splits`: the interactive protocol (:func:`evaluate`) on each ``data.test`` dataset on its
  own, the images sharded over the ranks of a process group (``ois_lightning/utils/parallel.py``); one results.json
  each and the paper's table row per dataset.
- :func:`evaluate_checkpoint`: ``ois eval``: the weights of a checkpoint (:mod:`ois_lightning.checkpoint`)
  evaluated so, under torchrun too, then the numbers to the tracker of
  ``logger.kind`` (``ois_lightning/tracking/wandb_run.py``).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from omegaconf import DictConfig

from ..checkpoint import load_weights
from ..config.schema import to_dict
from ..data.splits import build_split
from ..model import OISModel
from ..utils.lock import locks_output_dir
from ..utils.parallel import barrier, local_processes, process_group_from_env, rank_path, set_threads, world
from .report import TABLE_COLUMNS, table_row, write_results
from .evaluate import EvalResult, evaluate
from .results import results_paths
from .run_folder import refuse_training_run

EVAL_JOURNAL = "eval_journal.jsonl"  # beside results.json while the evaluation runs


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
def evaluate_checkpoint(cfg: DictConfig, checkpoint: Optional[dict] = None) -> dict[str, EvalResult]:
    """``ois eval``: weights from cfg.ckpt (:func:`load_weights`; ``checkpoint``: the file's dict when already
    read), evaluated on data.test; the numbers (and plots)
    go to the tracker of ``logger.kind`` as an evaluation run of its own (``tracking.eval_logger``). Under
    torchrun the images are sharded over the processes (:func:`process_group_from_env`) and rank 0 writes and
    logs. ``eval.threads`` sets torch's threads. A training run's folder is refused as output_dir."""
    from ..tracking.wandb_results import log_test  # W&B only for `ois eval`
    from ..tracking.wandb_run import eval_logger, log_parameter_counts

    refuse_training_run(cfg.output_dir, "ois eval")
    set_threads(cfg.eval.threads, local_processes())
    torch.manual_seed(cfg.seed)
    model = load_weights(cfg, checkpoint)
    with process_group_from_env(cfg.train.accelerator) as device:
        results = evaluate_test_splits(model.to(device), cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: only rank 0 logs
        return results
    logger = eval_logger(cfg)
    if logger is not None:
        logger.log_hyperparams(to_dict(cfg))
        log_parameter_counts([logger], model)
        log_test(logger, results, cfg, step=0, model=model, checkpoint=cfg.ckpt)
    return results
