"""The paper in miniature (``ois demo --tables all``, ``make paper-mini``): Tables 4-11 on layered scenes with the
pretrained tiny backbones, each row x seeds, the paper's numbers beside ours, and one scorecard.

Stages (each resumable: a rerun reuses what is finished): the pretrained backbones (:func:`pretrain`: the depth
network, the same with a tenth of the steps for Table 6, the MAE encoder for Tables 10-11; in parallel
processes), the rows every table needs (``experiments/demo/sweep*.yaml`` into one runs folder, so a row shared by
several tables, Full above all, trains once), Table 8's evaluation of Table 4's checkpoints on 224 px scenes,
then every table (``experiments/demo/tables/``), the scorecard (:mod:`ois_lightning.grids.scorecard`) and the
figures. Budgets are fixed in the configs and :mod:`ois_lightning.pretrain.budgets` (docs/mini_paper.md).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from ..config.schema import ConfigError
from ..pretrain.budgets import DepthBudget
from ..protocol.results import LAST, checkpoint_dir
from ..utils.atomic import atomic_write
from .jobs import run_jobs
from .reuse import Reuse, link_file, run_sweep

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "experiments" / "demo"
TABLES = {n: DEMO / "tables" / f"table{n}.yaml" for n in (5, 6, 7, 8, 9, 10, 11)}  # Table 4: DEMO / table.yaml
# the instrument's controls (docs/mini_paper.md): table spec and what its row must show (scorecard.Control)
CONTROLS = {"Positive control": (DEMO / "tables" / "control_positive.yaml", "effect"),
            "Negative control": (DEMO / "tables" / "control_negative.yaml", "none")}
PLACEBO_SEED_OFFSET = 100  # the placebo row's seed 100 + k stands for the demo's seed k (sweep_placebo.yaml)
HIGH_RES = 224  # Table 8's scenes: twice the input size, evaluated at it (HQSeg44K's images exceed the input)
TABLE8_ROWS = ("full", "wo_order", "wo_object", "wo_sparse", "wo_dense")
# fast mode (CI): the same stages on budgets that only prove the pipeline
FAST_PRETRAIN = {"depth": {"steps": 4, "batch": 2}, "tenth": {"steps": 1, "batch": 2}, "mae": {"steps": 2, "batch": 2}}


@dataclass(frozen=True)
class Pretrained:
    """The checkpoint files of the miniature's backbones (official DAv2 / MAE layouts)."""

    depth: Path
    tenth: Path
    mae: Path

    def weights(self, mae: bool) -> list[str]:
        """Overrides every run gets: the files by network name (``weights.<name>``, as a cluster's local.yaml)."""
        return [f"weights.tiny={self.depth}"] + ([f"weights.mae-tiny={self.mae}"] if mae else [])


def pretrain(out: Path, which: Sequence[str], fast: bool, parallel: int, reuse: Path | None = None) -> Pretrained:
    """``ois pretrain`` for each of ``which`` (depth / tenth / mae) in up to ``parallel`` processes, one torch
    thread each (log beside each file). A finished file with the same budget is reused here, without starting the
    command: its log gets the line the command prints when it reuses one; one finished in the folder ``reuse``
    (another scale's) is linked in first, with its report."""
    from ..pretrain.budgets import budget_for, finished_report, report_path, reuse_line

    folder = out / ("pretrain_fast" if fast else "pretrain")
    files = Pretrained(folder / "depth_tiny.pth", folder / "depth_tiny_tenth.pth", folder / "mae_tiny.pth")
    tenth = {"steps": max(1, DepthBudget().steps // 10)}
    budgets = {"depth": ("depth", files.depth, {}), "tenth": ("depth", files.tenth, tenth), "mae": ("mae", files.mae, {})}
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name in which:
        kind, path, given = budgets[name]
        given = FAST_PRETRAIN[name] if fast else given
        log, budget = path.with_suffix(".log"), budget_for(kind, **given)
        source = None if reuse is None else reuse / path.name
        if source is not None and not path.is_file() and finished_report(source, budget) is not None:
            link_file(source, path)
            link_file(report_path(source), report_path(path))
        if finished_report(path, budget) is not None:
            log.write_text(reuse_line(path) + "\n")
            continue
        flags = [str(x) for key, value in given.items() for x in (f"--{key}", value)]
        argv = [sys.executable, "-m", "ois_lightning", "pretrain", kind, "--out", str(path), *flags, "--threads", "1"]
        jobs.append((name, argv, log))
    failed = run_jobs(jobs, parallel)
    if failed:
        raise ConfigError("pretraining failed: " + "; ".join(failed))
    return files


def evaluate_high_res(runs: Path, hr_runs: Path, extra: Sequence[str], seeds: Sequence[int], parallel: int) -> None:
    """Table 8 in miniature: each Table 4 row's checkpoints evaluated (``ois eval``, up to ``parallel`` at a time,
    log ``<output_dir>/eval.log``) on scenes generated at :data:`HIGH_RES` px, which the protocol resizes to the
    input size and the prediction back (stretch)."""
    jobs = []
    for row in TABLE8_ROWS:
        for seed in seeds:
            out = hr_runs / "demo" / row / f"seed{seed}"
            if (out / "results.json").is_file():
                continue
            ckpt = checkpoint_dir(runs / "demo" / row / f"seed{seed}") / LAST
            argv = [sys.executable, "-m", "ois_lightning", "eval", str(DEMO / f"{row}.yaml"), f"ckpt={ckpt}",
                    f"seed={seed}", *extra, f"data.layered.size={HIGH_RES}", f"output_dir={out}"]
            jobs.append((f"{row} seed{seed}", argv, out / "eval.log"))
    failed = run_jobs(jobs, parallel)
    if failed:
        raise ConfigError("Table 8 evaluation failed: " + "; ".join(failed))


def run_tables(out: Path, runs: Path, hr_runs: Path, demo_table: object) -> list[tuple[str, object]]:
    """Tables 5-11 (Table 4 is the demo's ``demo_table``) and the two controls into ``out``/tableN.md / .csv /
    _miou_vs_clicks.png / .pdf (``control_positive`` / ``control_negative``), then the scorecard of all of them into
    ``out``/scorecard.md / .csv, the controls first."""
    from ..grids.scorecard import controls, entries, to_csv, to_markdown
    from ..grids.table import make_table

    def one(spec: Path, folder: Path, name: str) -> object:
        # written into ``out`` only: ``folder``'s own table.md stays the one ``ois table`` makes of it (Table 4)
        table = make_table(folder, spec, paper=True, wandb_project=None, out=lambda line: None, into=out, stem=name)
        print(f"{spec.stem}: {out / f'{name}.md'}")
        return table

    tables: list[tuple[str, object]] = [("Table 4", demo_table)]
    for n, spec in TABLES.items():
        tables.append((f"Table {n}", one(spec, (hr_runs if n == 8 else runs) / "demo", f"table{n}")))
    checks = controls([(name, one(spec, runs / "demo", spec.stem), kind) for name, (spec, kind) in CONTROLS.items()])
    found = entries(tables)
    card = to_markdown(found, checks=checks)
    atomic_write(out / "scorecard.md", lambda f: f.write(card))
    atomic_write(out / "scorecard.csv", lambda f: f.write(to_csv(found, checks)))
    print(card)
    return tables


def run_mini_paper(out: Path, runs: Path, files: Pretrained, extra: Sequence[str], seeds: Sequence[int] | None,
                   parallel: int, demo_table: object, reuse: Reuse | None = None) -> int:
    """The stages after the demo's Table 4: the other rows, Table 8's evaluation, the tables, the figures;
    ``reuse``: the runs of another scale that may be evaluated instead of trained again (tools/reuse.py)."""
    from .figures import run_figures

    weights = files.weights(mae=True)
    print("[paper 1/4] the controls, then the rows of Tables 5-11")
    placebo = None if seeds is None else [PLACEBO_SEED_OFFSET + s for s in seeds]
    # the controls first: a run stopped part-way has already checked the instrument it will be read with
    shifted = None if reuse is None else replace(reuse, seeds=tuple(PLACEBO_SEED_OFFSET + s for s in reuse.seeds))
    for sweep, more, which, reusing in (("sweep_controls.yaml", [], seeds, reuse),
                                        ("sweep_placebo.yaml", [], placebo, shifted),
                                        ("sweep_mini.yaml", [], seeds, reuse),
                                        ("sweep_mini_tenth.yaml", [f"data.depth.checkpoint={files.tenth}"], seeds,
                                         reuse)):
        rc = run_sweep(DEMO / sweep, extra, [*weights, *more], parallel, runs, which, reusing)
        if rc != 0:
            print(f"ois demo: some runs failed; see {runs}/demo/*/seed*/train.log (rerun to resume)")
            return rc
    print(f"[paper 2/4] Table 8: Table 4's checkpoints on {HIGH_RES} px scenes")
    hr_runs = out / "runs_high_res"
    evaluate_high_res(runs, hr_runs, [*extra, *weights], seeds or (0, 1), parallel)
    print("[paper 3/4] Tables 5-11 and the scorecard")
    run_tables(out, runs, hr_runs, demo_table)
    print("[paper 4/4] Figs. 3 and 6 (and the qualitative strip) on held-out scenes")
    ckpts = [str(checkpoint_dir(runs / "demo" / row / "seed0") / LAST) for row in ("full", "wo_order")]
    run_figures(ckpts, out / "figures", None, list(extra), worst=2)
    return 0
