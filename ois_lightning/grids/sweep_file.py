"""Ablation grids: the paper's tables as data (``experiments/tableN/table.yaml``), W&B sweep files
(``sweeps/tableN.yaml``) expanded into grid points, and the run identity (project / group / name / tags) every
training run is logged under.

A sweep file picks the row through a parameter ``config`` whose values are experiment YAML paths. W&B passes
it (with ``${args_no_hyphens}``) as ``config=experiments/table4/full.yaml``; :func:`normalize_argv` turns that
token back into the positional CONFIG argument of ``ois train`` wherever it appears, so every DDP rank sees
the same argv and nothing is read from ``wandb.config``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config.schema import ConfigError
from ..config.load import load_config, read_yaml

# Metric names (keys of ois_lightning.protocol.metrics.summarize_ious) a table may list, with the better direction.
METRIC_GOALS: dict[str, str] = {
    "NoC85": "lower", "NoC90": "lower", "NoC95": "lower",
    "NoF85": "lower", "NoF90": "lower", "NoF95": "lower",
    "1-mIoU": "higher", "5-mIoU": "higher",
}
CONFIG_PARAM = "config"  # the sweep parameter whose value is the row's experiment YAML
SUBCOMMANDS_WITH_CONFIG = ("train", "eval", "print-config")
# Values of the W&B command macros the local runner understands.
ARG_MACROS = ("${args_no_hyphens}", "${args}")


# ---------------------------------------------------------------------------------------------- table specs
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


# ---------------------------------------------------------------------------------------------- sweep files
@dataclass
class GridPoint:
    """One run of a sweep: the parameter values in file order (as W&B sends them)."""

    params: dict[str, Any]

    @property
    def config(self) -> str:
        return str(self.params[CONFIG_PARAM])

    @property
    def seed(self) -> int:
        return int(self.params.get("seed", 0))

    def args(self, macro: str = "${args_no_hyphens}") -> list[str]:
        """The argv tokens W&B's agent substitutes for ``macro`` (``f"{k}={v}"``, ``--`` for ``${args}``)."""
        prefix = "--" if macro == "${args}" else ""
        return [f"{prefix}{k}={v}" for k, v in self.params.items()]


@dataclass
class Sweep:
    name: str
    path: Path
    data: dict
    points: list[GridPoint]

    @property
    def command(self) -> list[str]:
        return [str(c) for c in self.data["command"]]


def _param_values(path: Path, name: str, spec: Any) -> list[Any]:
    if not isinstance(spec, dict) or not ({"value", "values"} & set(spec)):
        raise ConfigError(f"{path}: parameters.{name} must have 'value' or 'values' (grid search), got {spec!r}")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: parameters.{name}.values must be a non-empty list, got {values!r}")
        return values
    return [spec["value"]]


def load_sweep(path: str | Path, check_configs: bool = True) -> Sweep:
    """Read a grid sweep file, check what ``wandb sweep`` needs and what ``ois train`` expects, and expand the
    grid (cartesian product in parameter order, first parameter slowest, like W&B's grid search).

    With ``check_configs`` every row config must exist (relative to the working directory, as for the agent).
    """
    path = Path(path)
    data = read_yaml(path)
    if data.get("method") != "grid":
        raise ConfigError(f"{path}: key 'method' must be 'grid', got {data.get('method')!r}")
    params = data.get("parameters")
    if not isinstance(params, dict) or CONFIG_PARAM not in params:
        raise ConfigError(f"{path}: 'parameters' must be a mapping with a '{CONFIG_PARAM}' parameter (row YAMLs)")
    command = data.get("command")
    if not isinstance(command, list) or "train" not in command:
        raise ConfigError(f"{path}: 'command' must be a list running `ois_lightning train`, got {command!r}")
    macros = [c for c in command if c in ARG_MACROS]
    if len(macros) != 1 or command[-1] not in ARG_MACROS:
        raise ConfigError(f"{path}: 'command' must end with one of {', '.join(ARG_MACROS)}, got {command!r}")
    names = list(params)
    axes = [_param_values(path, n, params[n]) for n in names]
    points = [GridPoint(dict(zip(names, combo))) for combo in itertools.product(*axes)]
    if check_configs:
        for config in axes[names.index(CONFIG_PARAM)]:
            if not Path(str(config)).is_file():
                raise ConfigError(f"{path}: parameters.{CONFIG_PARAM} value '{config}' is not a file "
                                  f"(paths are relative to the directory you run the sweep from)")
    return Sweep(str(data.get("name", path.stem)), path, data, points)


def point_overrides(point: GridPoint) -> list[str]:
    """The overrides ``ois train`` applies for a grid point (everything but the config path)."""
    return [a for a in point.args() if not a.startswith(f"{CONFIG_PARAM}=")]


def resolve_point(point: GridPoint, extra: Optional[list[str]] = None):
    """The fully resolved config of a grid point, exactly as ``ois train`` would load it."""
    return load_config(point.config, point_overrides(point) + list(extra or []))


def normalize_argv(argv: list[str]) -> list[str]:
    """Move a ``config=PATH`` token (W&B ``${args_no_hyphens}``) of train/eval/print-config to the positional
    CONFIG slot right after the subcommand, so argv order from the sweep server does not matter."""
    if not argv or argv[0] not in SUBCOMMANDS_WITH_CONFIG:
        return list(argv)
    tokens = [a for a in argv[1:] if a.startswith(f"{CONFIG_PARAM}=")]
    if not tokens:
        return list(argv)
    if len(tokens) > 1:
        raise ConfigError(f"command line: '{CONFIG_PARAM}=' given {len(tokens)} times ({', '.join(tokens)})")
    i = argv.index(tokens[0], 1)
    return [argv[0], tokens[0].split("=", 1)[1], *argv[1:i], *argv[i + 1:]]


# ---------------------------------------------------------------------------------------------- run identity
def run_identity(cfg: Any) -> tuple[str, str, str, list[str]]:
    """(project, group, name, tags) of a training run's W&B run.

    project = ``logger.project``; group = ``logger.group`` or the table (else the experiment name), so all seeds
    and rows of a table land in one group; name = ``logger.name`` or ``<table>-<row>-seed<k>`` (else
    ``<name>-seed<k>``); tags = ``logger.tags`` + table, row, ``seed<k>``.
    """
    log = cfg.logger
    table, row, seed = cfg.get("table"), cfg.get("row"), int(cfg.seed)
    group = log.group or table or cfg.name
    if log.name:
        name = log.name
    elif table and row:
        name = f"{table}-{row}-seed{seed}"
    else:
        name = f"{cfg.name}-seed{seed}"
    tags = list(log.tags) + [t for t in (table, row) if t] + [f"seed{seed}"]
    return str(log.project), str(group), str(name), list(dict.fromkeys(tags))
