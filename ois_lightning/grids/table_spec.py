"""The paper's tables as data (``experiments/tableN/table.yaml``): rows, their configs and references, the
paper's numbers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config.load import read_yaml
from ..config.schema import ConfigError
from ..protocol.metrics import METRIC_GOALS


@dataclass
class RowSpec:
    """One row of a paper table: our config (None for another method's paper-only row) and the paper's numbers."""

    name: str
    label: str
    config: Optional[Path]
    reference: str  # row the deltas of this row are taken against
    paper: dict[str, float] = field(default_factory=dict)


@dataclass
class TableSpec:
    """A paper table: rows in the paper's order, metric columns, the reference ("Full") row."""

    name: str
    title: str
    dataset: str
    metrics: list[str]
    reference: str
    rows: list[RowSpec]
    path: Path

    def row(self, name: str) -> RowSpec:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)


def load_table_spec(path: str | Path) -> TableSpec:
    """Read and check ``table.yaml``: known metrics, existing row configs, a reference row that has a config."""
    path = Path(path)
    data = read_yaml(path)
    for key in ("table", "metrics", "reference", "rows"):
        if key not in data:
            raise ConfigError(f"{path}: missing key '{key}'")
    metrics = data["metrics"]
    if not isinstance(metrics, list) or not metrics:
        raise ConfigError(f"{path}: key 'metrics' must be a non-empty list, got {metrics!r}")
    for m in metrics:
        if m not in METRIC_GOALS:
            raise ConfigError(f"{path}: metric {m!r} unknown (expected one of {', '.join(METRIC_GOALS)})")
    if not isinstance(data["rows"], dict) or not data["rows"]:
        raise ConfigError(f"{path}: key 'rows' must be a non-empty mapping row name -> {{config, paper, ...}}")
    borrowed = _paper_source(path, data)
    rows = []
    for name, row in data["rows"].items():
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: rows.{name} must be a mapping, got {row!r}")
        config = row.get("config")
        config_path = (path.parent / config) if config is not None else None
        if config_path is not None and not config_path.is_file():
            raise ConfigError(f"{path}: rows.{name}.config file '{config}' not found (looked for {config_path})")
        paper = row.get("paper") or {}
        if "paper_row" in row:
            if borrowed is None:
                raise ConfigError(f"{path}: rows.{name}.paper_row needs a table-level 'paper_from: <table.yaml>'")
            if row["paper_row"] not in borrowed:
                raise ConfigError(f"{path}: rows.{name}.paper_row={row['paper_row']!r} is not a row of "
                                  f"{data['paper_from']} (rows: {', '.join(borrowed)})")
            paper = {m: v for m, v in borrowed[row["paper_row"]].items() if m in metrics}
        for m, v in paper.items():
            if m not in metrics or not isinstance(v, (int, float)):
                raise ConfigError(f"{path}: rows.{name}.paper.{m}={v!r}: expected a number for one of {metrics}")
        rows.append(RowSpec(str(name), str(row.get("label", name)), config_path,
                            str(row.get("reference", data["reference"])), dict(paper)))
    spec = TableSpec(str(data["table"]), str(data.get("title", data["table"])), str(data.get("dataset", "")),
                     list(metrics), str(data["reference"]), rows, path)
    for r in rows:
        if r.reference not in {x.name for x in rows if x.config is not None}:
            raise ConfigError(f"{path}: rows.{r.name}: reference row {r.reference!r} is not a row with a config")
    return spec


def _paper_source(path: Path, data: dict[str, Any]) -> Optional[dict[str, dict[str, float]]]:
    """``paper_from: <table.yaml>`` (relative to ``path``): that table's paper numbers by row, which rows of
    this table take with ``paper_row: <name>`` (a miniature of a paper table borrows the paper's numbers)."""
    if "paper_from" not in data:
        return None
    source = load_table_spec(path.parent / str(data["paper_from"]))
    return {r.name: r.paper for r in source.rows}


def default_table_path(table: str, search: Optional[list[Path]] = None) -> Path:
    """``experiments/<table>/table.yaml`` under the working directory or the repository of this package."""
    roots = search or [Path.cwd(), Path(__file__).resolve().parents[2]]
    for root in roots:
        candidate = root / "experiments" / table / "table.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no experiments/{table}/table.yaml under {', '.join(str(r) for r in roots)}; pass --table")
