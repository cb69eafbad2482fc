"""The ablation-grid commands of ``ois``: ``ois sweep``, ``ois table`` and the W&B-sweep argv hook (heavy imports
happen per command)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..config.schema import ConfigError


SWEEP_VALUE_OPTIONS = ("--parallel", "--runs-dir", "--gpus", "--python")


def normalize_sweep_argv(argv: list[str]) -> list[str]:
    """W&B sweeps pass the row as `config=PATH` anywhere in argv: make it the positional CONFIG (sweep_file.py).
    `ois sweep FILE --local k=v`: options go first, since argparse cannot mix them with `overrides` there."""
    from .sweep_file import normalize_argv

    if argv[:1] != ["sweep"]:
        return normalize_argv(list(argv))
    options, positionals = [], []
    tokens = iter(argv[1:])
    for token in tokens:
        if token in SWEEP_VALUE_OPTIONS:
            options += [token, next(tokens, "")]
        elif token.startswith("-"):
            options.append(token)
        else:
            positionals.append(token)
    return ["sweep", *options, *positionals]


def _sweep(args: argparse.Namespace) -> int:
    if not args.local:
        raise ConfigError(f"{args.sweep}: only --local runs here; for W&B run `wandb sweep {args.sweep}` then "
                          "`wandb agent <sweep id>` (docs/sweeps.md)")
    from .local_runner import run_local

    gpus = None if args.gpus is None else [g.strip() for g in args.gpus.split(",") if g.strip()]
    python = sys.executable if args.python is None else str(Path(args.python).resolve())
    if not os.access(python, os.X_OK):
        raise ConfigError(f"--python {args.python}: not an executable file (expected an interpreter or launcher)")
    return run_local(args.sweep, args.overrides, args.parallel, args.runs_dir, gpus=gpus, python=python)


def _table(args: argparse.Namespace) -> int:
    from ..protocol.results import ResultsError
    from .table import make_table

    try:
        make_table(args.runs, args.table, args.paper, args.n_boot, args.bootstrap_seed,
                   None if args.no_wandb else args.wandb_project, dataset=args.dataset,
                   allow_mixed=args.allow_mixed, allow_partial=args.allow_partial, wandb_always=args.wandb)
    except ResultsError as e:
        raise ConfigError(str(e)) from None
    return 0


def add_grid_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a W&B grid sweep file locally (no W&B server), resumable")
    p.add_argument("sweep", help="sweep YAML, e.g. sweeps/table4.yaml")
    p.add_argument("overrides", nargs="*", help="overrides appended to every grid point")
    p.add_argument("--local", action="store_true", help="expand the grid here and run each point as a subprocess")
    p.add_argument("--parallel", type=int, default=1, help="points run at the same time (default 1)")
    p.add_argument("--runs-dir", default="runs", help="results go to RUNS_DIR/<sweep>/<row>/seed<k> (default runs)")
    p.add_argument("--gpus", default=None, help="GPU ids shared out to the running points, e.g. 0,1,2,3 (each "
                                               "gets its own CUDA_VISIBLE_DEVICES; default: all visible GPUs)")
    p.add_argument("--python", default=None, help="interpreter (or launcher) each point runs with, the sweep "
                                                  "command's ${interpreter} (default: this Python; on SLURM: "
                                                  "sweeps/slurm/bin/python, docs/sweeps.md)")
    p.set_defaults(func=_sweep)
    p = sub.add_parser("table", help="collate results.json files into a paper table (Markdown + CSV)")
    p.add_argument("runs", help="directory searched for results.json, e.g. runs/table4")
    p.add_argument("--table", default=None, help="table.yaml (default experiments/<table of the runs>/table.yaml)")
    p.add_argument("--paper", action="store_true", help="print the paper's reported numbers beside ours")
    p.add_argument("--dataset", default=None,
                   help="test dataset to tabulate when runs were evaluated on several (default: the table's)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="RNG seed of the bootstrap (default 0)")
    p.add_argument("--wandb-project", default="ois_lightning", help="W&B project the table is logged to")
    to_wandb = p.add_mutually_exclusive_group()
    to_wandb.add_argument("--wandb", action="store_true", help="log the table and its rows' mIoU-vs-clicks curves "
                          "(one chart) to W&B also when offline (default: only when online)")
    to_wandb.add_argument("--no-wandb", action="store_true", help="do not log the table to W&B")
    p.add_argument("--allow-mixed", action="store_true",
                   help="average a row's seeds even when they were run with different settings")
    p.add_argument("--allow-partial", action="store_true", help="write the table even when rows have no results")
    p.set_defaults(func=_table)
