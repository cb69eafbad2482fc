"""The miniature paper's scorecard: per ablation row of every table, the paper's direction against the row's
reference, ours with its 95% bootstrap CI (from :mod:`ois_lightning.grids.table`), and a verdict.

The rule is fixed before any table is read (docs/mini_paper.md): on the verdict metric (NoC90, the first column
of every paper table 4-11), the paper's delta has a direction (worse / better / none when it rounds to 0.00);
ours has one only when its CI excludes 0. Same direction: *agrees*; opposite: *disagrees*; a CI containing 0:
*inconclusive* (the miniature cannot tell), except that a paper delta of 0 and a CI containing 0 *agree*.
Rows of ours without a paper row (an upper bound the paper does not have) are listed with no verdict.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Optional, Sequence

from ..protocol.metrics import METRIC_GOALS
from .table import Table, delta_text, fmt_value

VERDICT_METRIC = "NoC90"
AGREES, DISAGREES, INCONCLUSIVE, NOT_IN_PAPER = "agrees", "disagrees", "inconclusive", "not in the paper"


@dataclass
class Entry:
    """One ablation row: where it is, the paper's delta and ours (mean delta and CI) on the verdict metric."""

    table: str
    row: str
    label: str
    reference: str
    paper_delta: Optional[float]
    delta: Optional[float]
    ci: Optional[tuple[float, float]]
    verdict: str


def _direction(value: float, tolerance: float = 0.005) -> int:
    return 0 if abs(value) < tolerance else (1 if value > 0 else -1)


def verdict(paper_delta: Optional[float], ci: Optional[tuple[float, float]]) -> str:
    """The fixed rule of the module docstring."""
    if paper_delta is None:
        return NOT_IN_PAPER
    if ci is None:
        return INCONCLUSIVE
    ours = 1 if ci[0] > 0 else (-1 if ci[1] < 0 else 0)
    paper = _direction(paper_delta)
    if ours == 0:
        return AGREES if paper == 0 else INCONCLUSIVE
    return AGREES if ours == paper else DISAGREES


def entries(tables: Sequence[tuple[str, Table]], metric: str = VERDICT_METRIC) -> list[Entry]:
    """Every row of ours that is not its table's reference, in table order."""
    found = []
    for name, table in tables:
        labels = {r.name: r.label for r in table.rows}
        for row in table.rows:
            if row.config is None or row.is_reference or metric not in row.cells:
                continue
            c = row.cells[metric]
            found.append(Entry(name, row.name, row.label, labels.get(row.reference, row.reference), c.paper_delta,
                               c.delta, c.ci, verdict(c.paper_delta, c.ci)))
    return found


def to_markdown(found: Sequence[Entry], metric: str = VERDICT_METRIC) -> str:
    better = "lower" if METRIC_GOALS[metric] == "lower" else "higher"
    counts = {v: sum(e.verdict == v for e in found) for v in (AGREES, DISAGREES, INCONCLUSIVE)}
    judged = sum(counts.values())
    lines = [f"**Scorecard** — {metric} ({better} is better), each row against its table's reference: "
             f"{counts[AGREES]} agree, {counts[DISAGREES]} disagree, {counts[INCONCLUSIVE]} inconclusive "
             f"of {judged} rows with a paper number",
             "", f"| table | row | vs | paper Δ{metric} | ours Δ{metric} [95% CI] | verdict |", "|---|---|---|---|---|---|"]
    for e in found:
        ours = "—" if e.delta is None else delta_text(metric, e.delta, e.ci)
        mark = f"**{e.verdict}**" if e.verdict == DISAGREES else e.verdict
        lines.append(f"| {e.table} | {e.label} | {e.reference} | {fmt_value(metric, e.paper_delta, True)} | {ours} "
                     f"| {mark} |")
    return "\n".join(lines) + "\n"


def to_csv(found: Sequence[Entry]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "row", "label", "reference", "paper_delta", "delta", "ci_low", "ci_high", "verdict"])
    for e in found:
        ci = e.ci or (None, None)
        writer.writerow([e.table, e.row, e.label, e.reference, *("" if v is None else repr(float(v))
                                                               for v in (e.paper_delta, e.delta, *ci)), e.verdict])
    return buf.getvalue()
