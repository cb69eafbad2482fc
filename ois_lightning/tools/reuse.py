"""The full scale of the miniature paper builds on a finished default scale instead of redoing it.

``PAPER_MINI_FULL=1 make paper-mini`` differs from ``make paper-mini`` in its seeds (more) and its evaluation
(more held-out objects, the isegm early stop): the training of a row and seed is the same computation at both
scales. So a point of the full scale whose seed the default scale already trained, with identical training
settings (:func:`training_settings`: every result setting but :data:`EVAL_ONLY_KEYS`), is not trained again: its
checkpoint is evaluated (``ois eval``) with the full scale's settings into the full scale's run folder, then
linked there (a hard link where the file system allows, else a copy), and ``reused_from.json`` records where it
came from. The pretrained backbones are linked the same way when their budgets match. Anything else (other
training settings, an unfinished or missing run) is trained as usual by the sweep runner.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config.schema import ConfigError
from ..grids.local_runner import Job, plan, run_local
from ..grids.sweep_file import load_sweep
from ..protocol.results import LAST, checkpoint_dir
from ..utils.atomic import atomic_write
from .jobs import run_jobs

# result settings that only change the evaluation, never the weights (validation during training always runs all
# clicks.max_eval clicks on data.layered.val_length scenes, which these keys leave alone)
EVAL_ONLY_KEYS = ("eval.", "data.layered.test_length", "clicks.target_iou", "clicks.min_eval")
REUSED_MARK = "reused_from.json"


def training_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` (:func:`ois_lightning.protocol.results.result_settings`) without :data:`EVAL_ONLY_KEYS`."""
    return {k: v for k, v in settings.items() if not any(k == e or (e.endswith(".") and k.startswith(e))
                                                          for e in EVAL_ONLY_KEYS)}


def link_file(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content: a hard link, or a copy across file systems; atomic (a temp name, then
    ``os.replace``)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.linking")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def reusable(source: Job, target: Job) -> bool:
    """Whether ``target`` may take ``source``'s weights: ``source`` finished with a last.ckpt, the same seed, and
    the same training settings."""
    return (source.point.seed == target.point.seed and source.status().finished
            and (checkpoint_dir(source.output_dir) / LAST).is_file()
            and training_settings(source.settings) == training_settings(target.settings))


def eval_argv(target: Job, checkpoint: Path, extra: Sequence[str]) -> list[str]:
    """``ois eval`` of ``checkpoint`` with ``target``'s row, seed and overrides, into its output_dir."""
    return [sys.executable, "-m", "ois_lightning", "eval", *target.point.args(), *extra, f"ckpt={checkpoint}",
            f"output_dir={target.output_dir}"]


def reuse_trained(sweep_path: Path, source_runs: Path, source_extra: Sequence[str], target_runs: Path,
                  target_extra: Sequence[str], seeds: Sequence[int], parallel: int) -> int:
    """Evaluate every reusable point of ``sweep_path`` (:func:`reusable`; seeds in ``seeds``) of the runs folder
    ``source_runs`` (planned with ``source_extra``) into ``target_runs`` (with ``target_extra``), up to
    ``parallel`` at a time, then link its checkpoint; returns how many were reused. A failed evaluation is a
    one-line ConfigError naming its log."""
    if not source_runs.is_dir():
        return 0
    sweep = load_sweep(sweep_path)
    sweep.points = [p for p in sweep.points if p.seed in seeds]
    pairs = [(s, t) for s, t in zip(plan(sweep, source_runs, list(source_extra)),
                                    plan(sweep, target_runs, list(target_extra)))
             if not t.status().finished and reusable(s, t)]
    jobs = [(t.label, eval_argv(t, checkpoint_dir(s.output_dir) / LAST, target_extra), t.output_dir / "eval.log")
            for s, t in pairs]
    if jobs:
        print(f"reusing {len(jobs)} trained point(s) of {source_runs}: evaluated with this scale's settings")
    failed = run_jobs(jobs, parallel)
    if failed:
        raise ConfigError("evaluating reused checkpoints failed: " + "; ".join(failed))
    for source, target in pairs:
        checkpoint = checkpoint_dir(source.output_dir) / LAST
        link_file(checkpoint, checkpoint_dir(target.output_dir) / LAST)
        record = {"checkpoint": str(checkpoint), "seed": source.point.seed,
                  "differs_in": sorted(k for k in set(source.settings) | set(target.settings)
                                       if source.settings.get(k) != target.settings.get(k))}
        atomic_write(target.output_dir / REUSED_MARK, lambda f: json.dump(record, f, indent=2))
    return len(pairs)


@dataclass(frozen=True)
class Reuse:
    """What a scale may take from another scale's finished output folder ``source``: the runs of ``seeds``, which
    that scale planned with ``source_overrides`` where this one has ``target_overrides``, and its pretrained
    backbones (``source``/pretrain)."""

    source: Path
    source_overrides: tuple[str, ...]
    target_overrides: tuple[str, ...]
    seeds: tuple[int, ...]

    @property
    def pretrain(self) -> Path:
        return self.source / "pretrain"


def run_sweep(sweep_path: Path, overrides: Sequence[str], more: Sequence[str], parallel: int, runs: Path,
              seeds: Sequence[int] | None, reuse: Reuse | None = None) -> int:
    """``ois sweep sweep_path --local`` into ``runs`` with the scale's ``overrides`` and ``more`` (weights, row
    settings), after taking every point ``reuse`` allows (:func:`reuse_trained`); the runner's exit code."""
    if reuse is not None:
        reuse_trained(sweep_path, reuse.source / "runs", [*reuse.source_overrides, *more], runs,
                      [*overrides, *more], [s for s in reuse.seeds if seeds is None or s in seeds], parallel)
    return run_local(sweep_path, [*overrides, *more], parallel, runs, seeds=seeds)
