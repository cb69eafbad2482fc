"""The miniature paper's scorecard: per ablation row of every table, the paper's direction against the row's
reference, ours with its 95% bootstrap CI (from :mod:`ois_lightning.grids.table`), and a verdict.

The rule is fixed before any table is read (docs/mini_paper.md): on the verdict metric (NoC90, the first column
of every paper table 4-11), the paper's delta has a direction (worse / better / none when it rounds to 0.00);
ours has one only when its CI excludes 0. Same direction: *agrees*; opposite: *disagrees*; a CI containing 0:
*inconclusive* (the miniature cannot tell), except that a paper delta of 0 and a CI containing 0 *agree*.
Rows of ours without a paper row (an upper bound the paper does not have) are listed with no verdict.

Two controls validate the instrument before any verdict is read: a *positive* control, a row that must show an
effect (its CI above 0: worse than its reference on NoC90), and a *negative* control, a placebo that must not (its
CI contains 0). If either fails, the scorecard's first line says, in bold, that the miniature cannot be trusted.
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


@dataclass
class Control:
    """A control row and what it must show: ``effect`` (positive control: CI above 0) or ``none`` (negative
    control: CI contains 0)."""

    kind: str
    entry: Entry

    @property
    def passed(self) -> bool:
        ci = self.entry.ci
        if ci is None:
            return False
        return ci[0] > 0 if self.kind == "effect" else ci[0] <= 0 <= ci[1]


def controls(tables: Sequence[tuple[str, Table, str]], metric: str = VERDICT_METRIC) -> list[Control]:
    """(name, table, ``effect`` | ``none``) -> one Control per non-reference row of each control table."""
    return [Control(kind, e) for name, table, kind in tables for e in entries([(name, table)], metric)]


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


def controls_markdown(checks: Sequence[Control], metric: str = VERDICT_METRIC) -> list[str]:
    """The controls' lines: a bold warning first when any failed, then one table row per control."""
    if not checks:
        return []
    failed = [c for c in checks if not c.passed]
    head = (f"**The miniature cannot be trusted: {len(failed)} of {len(checks)} controls failed "
            f"({', '.join(c.entry.table for c in failed)}); read no verdict below as evidence.**" if failed else
            f"Controls: {len(checks)} of {len(checks)} passed (the instrument shows an effect where one must be, "
            "none where none can be).")
    lines = [head, "", f"| control | row | vs | must show | ours Δ{metric} [95% CI] | result |", "|---|---|---|---|---|---|"]
    for c in checks:
        e = c.entry
        ours = "—" if e.delta is None else delta_text(metric, e.delta, e.ci)
        must = "an effect (CI above 0)" if c.kind == "effect" else "no effect (CI contains 0)"
        result = "passed" if c.passed else "**FAILED**"
        lines.append(f"| {e.table} | {e.label} | {e.reference} | {must} | {ours} | {result} |")
    return [*lines, ""]


def to_markdown(found: Sequence[Entry], metric: str = VERDICT_METRIC, checks: Sequence[Control] = ()) -> str:
    better = "lower" if METRIC_GOALS[metric] == "lower" else "higher"
    counts = {v: sum(e.verdict == v for e in found) for v in (AGREES, DISAGREES, INCONCLUSIVE)}
    judged = sum(counts.values())
    lines = [*controls_markdown(checks, metric), f"**Scorecard** — {metric} ({better} is better), each row against its table's reference: "
             f"{counts[AGREES]} agree, {counts[DISAGREES]} disagree, {counts[INCONCLUSIVE]} inconclusive "
             f"of {judged} rows with a paper number",
             "", f"| table | row | vs | paper Δ{metric} | ours Δ{metric} [95% CI] | verdict |", "|---|---|---|---|---|---|"]
    for e in found:
        ours = "—" if e.delta is None else delta_text(metric, e.delta, e.ci)
        mark = f"**{e.verdict}**" if e.verdict == DISAGREES else e.verdict
        lines.append(f"| {e.table} | {e.label} | {e.reference} | {fmt_value(metric, e.paper_delta, True)} | {ours} "
                     f"| {mark} |")
    return "\n".join(lines) + "\n"


def to_csv(found: Sequence[Entry], checks: Sequence[Control] = ()) -> str:
    """Every entry, then every control (its verdict ``control passed`` / ``control FAILED``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "row", "label", "reference", "paper_delta", "delta", "ci_low", "ci_high", "verdict"])
    rows = [(e, e.verdict) for e in found] + [(c.entry, f"control {'passed' if c.passed else 'FAILED'}")
                                               for c in checks]
    for e, text in rows:
        ci = e.ci or (None, None)
        writer.writerow([e.table, e.row, e.label, e.reference, *("" if v is None else repr(float(v))
                                                               for v in (e.paper_delta, e.delta, *ci)), text])
    return buf.getvalue()
