"""The identity (project / group / name / tags) every training run is logged under."""
from __future__ import annotations

from typing import Any


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
