"""``ois table``: collate ``results.json`` files of a sweep into a paper table (Tables 4-11).

Per row: our number (mean ± sample std over seeds; each seed's metric recomputed from its per-object IoU
curves with :func:`ois_lightning.protocol.metrics.summarize_ious`), the delta against the row's reference
("Full") row, and a 95% paired bootstrap confidence interval of that delta over seeds and evaluated objects
(:mod:`ois_lightning.grids.statistics`); the mIoU-vs-clicks plot of the rows.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from ..config.load import path_label
from ..config.schema import ConfigError
from ..protocol.metrics import METRIC_GOALS, miou_curve
from ..protocol.results import ResultsError, RunResult, collect, describe_changes
from ..utils.plots import FONT, TITLE, integer_ticks, new_figure, save_figure
from .statistics import bootstrap_ci, metric_aggregate, per_object_metrics, run_metrics
from .table_spec import TableSpec, default_table_path, load_table_spec

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Cell:
    mean: Optional[float] = None
    std: Optional[float] = None
    delta: Optional[float] = None
    ci: Optional[tuple[float, float]] = None
    paper: Optional[float] = None
    paper_delta: Optional[float] = None


@dataclass
class Row:
    name: str
    label: str
    config: Optional[str]
    reference: str
    is_reference: bool
    seeds: list[int] = field(default_factory=list)
    num_objects: int = 0
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Table:
    spec: TableSpec
    rows: list[Row]
    unmatched: list[str]  # results.json files that belong to no row of the table, or to another dataset
    dataset: Optional[str] = None  # the test dataset of the runs shown


def _per_seed(runs: list[RunResult], metrics: Sequence[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Object ids present in every seed and, per metric, the (S,N) per-seed, per-object values."""
    common = set(runs[0].ids)
    for r in runs[1:]:
        common &= set(r.ids)
    ids = sorted(common)
    stacked: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for r in runs:
        position = {i: k for k, i in enumerate(r.ids)}
        take = np.array([position[i] for i in ids], dtype=int)
        for m, v in per_object_metrics(r, metrics).items():
            stacked[m].append(v[take])
    return ids, {m: np.stack(v) for m, v in stacked.items()}


def _choose_dataset(spec: TableSpec, runs: list[RunResult], dataset: Optional[str]) -> Optional[str]:
    """The test dataset the table shows: ``dataset`` if given; else the one all runs share (None if they do not
    say); else the table's own (``spec.dataset``) when runs were evaluated on several."""
    if dataset is not None:
        return dataset
    present = sorted({r.dataset for r in runs if r.dataset is not None})
    if len(present) <= 1:
        return present[0] if present else None
    if spec.dataset in present:
        return spec.dataset
    raise ResultsError(f"the runs were evaluated on several datasets {present} and none is the table's "
                       f"({spec.dataset or 'unset'}); pick one with --dataset NAME")


def _check_same_settings(row: str, runs: list[RunResult]) -> None:
    """:class:`ResultsError` naming the runs and the differing keys when the seeds of ``row`` were run with
    different settings (:attr:`RunResult.fingerprint`)."""
    groups: dict[str, list[RunResult]] = {}
    for r in runs:
        groups.setdefault(r.fingerprint, []).append(r)
    if len(groups) > 1:
        first, second = list(groups.values())[:2]
        names = " vs ".join(", ".join(str(r.path) for r in g) for g in groups.values())
        raise ResultsError(f"row {row!r} mixes runs of {len(groups)} different settings ({names}): "
                           f"{describe_changes(first[0].settings, second[0].settings)}; rerun the stale points "
                           "(`ois sweep` reruns them) or pass --allow-mixed")


def missing_rows(table: Table) -> list[str]:
    """Rows with a config of ours but no results (the reference row marked)."""
    return [r.name + (" (reference)" if r.is_reference else "") for r in table.rows if r.config and not r.seeds]


def build_table(spec: TableSpec, runs: list[RunResult], n_boot: int = 2000, rng_seed: int = 0,
                dataset: Optional[str] = None, allow_mixed: bool = False) -> Table:
    """Rows in the paper's order with our numbers, deltas, CIs and the paper's numbers, from the runs of one
    test dataset (:func:`_choose_dataset`; a run evaluated on several datasets has one results.json each).
    The seeds of a row must share their settings fingerprint unless ``allow_mixed``."""
    in_table = [r for r in runs if r.row is not None and r.table in (None, spec.name)
                and any(s.name == r.row and s.config is not None for s in spec.rows)]
    shown = _choose_dataset(spec, in_table, dataset)
    by_row: dict[str, list[RunResult]] = {}
    for r in in_table:
        if shown is None or r.dataset in (None, shown):
            by_row.setdefault(r.row, []).append(r)
    used = {id(r) for rs in by_row.values() for r in rs}
    unmatched = [str(r.path) for r in runs if id(r) not in used]
    for name, rs in by_row.items():
        seeds = [r.seed for r in rs]
        if len(set(seeds)) != len(seeds):
            dup = sorted({s for s in seeds if seeds.count(s) > 1})
            raise ResultsError(f"row {name!r} has several results.json for seed(s) {dup}: "
                               + ", ".join(str(r.path) for r in rs if r.seed in dup))
        if not allow_mixed:
            _check_same_settings(name, rs)
    means = {name: {m: [run_metrics(r, spec.metrics)[m] for r in rs] for m in spec.metrics}
             for name, rs in by_row.items()}
    per_seed = {name: _per_seed(rs, spec.metrics) for name, rs in by_row.items()}
    rows = []
    for s in spec.rows:
        row = Row(s.name, s.label, path_label(s.config) if s.config else None, s.reference, s.reference == s.name)
        rs = by_row.get(s.name, [])
        row.seeds = sorted(r.seed for r in rs)
        row.num_objects = len(per_seed[s.name][0]) if rs else 0
        for m in spec.metrics:
            cell = Cell(paper=s.paper.get(m))
            ref_paper = spec.row(s.reference).paper.get(m)
            if cell.paper is not None and ref_paper is not None and not row.is_reference:
                cell.paper_delta = round(cell.paper - ref_paper, 6)  # the paper prints at most 2 decimals
            if rs:
                values = np.array(means[s.name][m])
                cell.mean = float(values.mean())
                cell.std = float(values.std(ddof=1)) if values.size > 1 else None
                ref_values = means.get(s.reference, {}).get(m)
                if ref_values is not None and not row.is_reference:
                    cell.delta = cell.mean - float(np.mean(ref_values))
                    cell.ci = _paired_ci(per_seed[s.name], per_seed[s.reference], m, n_boot, rng_seed)
            row.cells[m] = cell
        rows.append(row)
    return Table(spec, rows, unmatched, shown)


def _paired_ci(row: tuple[list[str], dict[str, np.ndarray]], ref: tuple[list[str], dict[str, np.ndarray]],
               metric: str, n_boot: int, rng_seed: int) -> Optional[tuple[float, float]]:
    """:func:`bootstrap_ci` of ``metric`` over the objects both rows evaluated (paired by id)."""
    ids = sorted(set(row[0]) & set(ref[0]))
    if not ids:
        return None
    pos_row = {i: k for k, i in enumerate(row[0])}
    pos_ref = {i: k for k, i in enumerate(ref[0])}
    return bootstrap_ci(row[1][metric][:, [pos_row[i] for i in ids]], ref[1][metric][:, [pos_ref[i] for i in ids]],
                        metric_aggregate(metric), n_boot, rng_seed)


# ------------------------------------------------------------------------------------------------ rendering
def fmt_value(metric: str, v: Optional[float], signed: bool = False) -> str:
    """One number as the tables print it (NoF counts without decimals, — when missing)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    sign = "+" if signed else ""
    if metric.startswith("NoF") and float(v).is_integer():
        return f"{v:{sign}.0f}"
    return f"{v:{sign}.{1 if metric.startswith('NoF') else 2}f}"


def _ours_text(metric: str, c: Cell) -> str:
    if c.mean is None:
        return "—"
    text = fmt_value(metric, c.mean) + (f" ± {fmt_value(metric, c.std)}" if c.std is not None else "")
    if c.delta is not None:
        text += f" ({delta_text(metric, c.delta, c.ci)})"
    return text


def delta_text(metric: str, delta: float, ci: Optional[tuple[float, float]]) -> str:
    """A signed delta and its CI as the tables print them: ``+1.04 [+0.20, +1.90]``."""
    return fmt_value(metric, delta, True) + (f" [{fmt_value(metric, ci[0], True)}, {fmt_value(metric, ci[1], True)}]" if ci else "")


def _paper_text(metric: str, c: Cell) -> str:
    if c.paper is None:
        return "—"
    return fmt_value(metric, c.paper) + (f" ({fmt_value(metric, c.paper_delta, True)})" if c.paper_delta is not None else "")


def to_markdown(table: Table, paper: bool = False) -> str:
    spec = table.spec
    arrows = {m: "↓" if METRIC_GOALS[m] == "lower" else "↑" for m in spec.metrics}
    header = ["Method"]
    for m in spec.metrics:
        header.append(f"{m} {arrows[m]}")
        if paper:
            header.append(f"{m} (paper)")
    header += ["seeds", "objects"]
    on = f" on {table.dataset}" if table.dataset and table.dataset != spec.dataset else ""  # not the paper's set
    lines = [f"**{spec.title}** — ours{on}: mean ± std over seeds "
             "(Δ vs reference [95% bootstrap CI over seeds and objects])",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        label = row.label + (" (ref)" if row.is_reference else "")
        cells = [label]
        for m in spec.metrics:
            cells.append(_ours_text(m, row.cells[m]))
            if paper:
                cells.append(_paper_text(m, row.cells[m]))
        cells += [",".join(map(str, row.seeds)) or "—", str(row.num_objects or "—")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    header = ["row", "label", "config", "reference", "is_reference", "seeds", "num_objects"]
    for m in table.spec.metrics:
        header += [m, f"{m}_std", f"{m}_delta", f"{m}_ci_low", f"{m}_ci_high", f"{m}_paper", f"{m}_paper_delta"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        line: list[Any] = [row.name, row.label, row.config or "", row.reference, int(row.is_reference),
                           " ".join(map(str, row.seeds)), row.num_objects]
        for m in table.spec.metrics:
            c = row.cells[m]
            ci = c.ci or (None, None)
            line += ["" if v is None else repr(float(v)) for v in (c.mean, c.std, c.delta, ci[0], ci[1], c.paper,
                                                                  c.paper_delta)]
        writer.writerow(line)
    return buf.getvalue()


def make_table(runs_dir: str | Path, table_path: Optional[str | Path] = None, paper: bool = False,
               n_boot: int = 2000, rng_seed: int = 0, wandb_project: Optional[str] = "ois_lightning",
               out: Any = print, dataset: Optional[str] = None, allow_mixed: bool = False,
               allow_partial: bool = False, wandb_always: bool = False, into: Optional[str | Path] = None,
               stem: str = "table") -> Table:
    """Collate ``runs_dir``, write ``<stem>.md``, ``<stem>.csv`` and ``<stem>_miou_vs_clicks.png`` (and .pdf)
    atomically into ``into`` (default: ``runs_dir``) and print the Markdown.
    A row without results is a :class:`ResultsError` unless ``allow_partial`` (then a warning). With a
    ``wandb_project``, the table and its rows' curves go to W&B when online, or in any mode but disabled with
    ``wandb_always`` (:func:`~ois_lightning.tracking.wandb_results.log_table`, run files under ``runs_dir``)."""
    from ..utils.atomic import atomic_write
    from ..tracking.wandb_results import log_table

    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ConfigError(f"{runs_dir}: runs directory not found")
    runs, problems = collect(runs_dir)
    for p in problems:
        out(f"warning: skipping broken {p}")
    if table_path is None:
        tables = sorted({r.table for r in runs if r.table})
        if len(tables) != 1:
            raise ConfigError(f"{runs_dir}: cannot tell the table from results.json (found tables {tables}); "
                              "pass --table experiments/tableN/table.yaml")
        table_path = default_table_path(tables[0])
    table = build_table(load_table_spec(table_path), runs, n_boot, rng_seed, dataset, allow_mixed)
    missing = missing_rows(table)
    if missing and not allow_partial:
        raise ResultsError(f"{runs_dir}: no results for row(s) {', '.join(missing)} of {table.spec.name}; finish "
                           "them (`ois sweep` runs the missing points) or pass --allow-partial")
    if missing:
        out(f"warning: partial table: no results for row(s) {', '.join(missing)}")
    for path in table.unmatched:
        out(f"warning: {path} belongs to no row of {table.spec.name}"
            + (f" (or was evaluated on another dataset than {table.dataset})" if table.dataset else ""))
    markdown = to_markdown(table, paper)
    dest = runs_dir if into is None else Path(into)
    atomic_write(dest / f"{stem}.md", lambda f: f.write(markdown))
    csv_text = to_csv(table)
    atomic_write(dest / f"{stem}.csv", lambda f: f.write(csv_text))
    out(markdown)

    plot_table_curves(table, runs, dest / f"{stem}_miou_vs_clicks.png")
    out(f"wrote {dest / stem}.md, {dest / stem}.csv and {dest / stem}_miou_vs_clicks.png (and .pdf)")
    header, *rows = csv.reader(io.StringIO(csv_text))
    mode = wandb_project and log_table(table.spec.name, header, rows, row_curves(table, runs), wandb_project,
                                       runs_dir, wandb_always)
    if mode:
        out(f"logged the table and its rows' curves to W&B project {wandb_project} ({mode}"
            + (f": wandb sync {runs_dir / 'wandb'}/offline-run-*)" if mode == "offline" else ")"))
    return table


# ------------------------------------------------------------------------------------------------ curves
def row_curves(table: Table, runs: Sequence[RunResult]) -> list[tuple[str, np.ndarray]]:
    """(row label, mIoU (%) after 1..N clicks) for each row of ``table`` with results, in the table's order: the
    mean over the row's seeds, up to the shortest curve, on the test dataset the table shows."""
    curves = []
    for row in table.spec.rows:
        mine = [r for r in runs if r.row == row.name and r.table in (None, table.spec.name)
                and (table.dataset is None or r.dataset in (None, table.dataset))]
        if mine:
            seeds = [100 * miou_curve(r.ious, min(map(len, r.ious))) for r in mine]
            n = min(map(len, seeds))
            curves.append((row.label, np.mean([c[:n] for c in seeds], axis=0)))
    return curves


def curves_title(table: Table) -> str:
    return f"{table.spec.title}{f' on {table.dataset}' if table.dataset else ''}: mean over seeds"


def plot_table_curves(table: Table, runs: Sequence[RunResult], path: str | Path) -> "Figure":
    """mIoU (%) vs clicks, one curve per row of ``table`` with results (:func:`row_curves`, labelled as the table
    spec's rows), integer click ticks, written atomically to ``path`` (PNG) and beside it as PDF."""
    fig, axes = new_figure(1, 1)
    ax = axes[0, 0]
    for label, curve in row_curves(table, runs):
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", ms=3, label=label)
    ax.set_xlabel("clicks", fontsize=FONT)
    ax.set_ylabel("mIoU (%)", fontsize=FONT)
    ax.set_title(curves_title(table), fontsize=TITLE, wrap=True)
    integer_ticks(ax)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=FONT)
    fig.set_size_inches(6, 4)
    save_figure(fig, path)
    return fig
