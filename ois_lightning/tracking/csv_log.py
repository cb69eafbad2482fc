"""``metrics.csv`` and ``hparams.yaml`` in the layout of Lightning's CSVLogger (``<root>/version_N/``), written
without Lightning: the ``logger.kind=csv`` logger of ``ois eval`` (``csv_eval/``; ``ois train`` uses Lightning's
own CSVLogger in ``csv/``)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

VERSION = "version_"


def next_version(root: Path) -> int:
    """One above the highest ``version_N`` folder in ``root`` (0 when there is none), as Lightning numbers them."""
    taken = [int(p.name[len(VERSION):]) for p in root.glob(VERSION + "*")
             if p.is_dir() and p.name[len(VERSION):].isdigit()]
    return max(taken, default=-1) + 1


class CSVLog:
    """A logger (``tracking.Sink``) writing ``<root>/version_N/``: the hyperparameters merged into
    ``hparams.yaml`` at each :meth:`log_hyperparams`, the metric rows (each with its ``step``) into
    ``metrics.csv`` at :meth:`save`, the columns sorted by name."""

    def __init__(self, root: str | Path) -> None:
        self.dir = Path(root) / f"{VERSION}{next_version(Path(root))}"
        self.dir.mkdir(parents=True)
        self.hparams: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        OmegaConf.save(self.hparams, self.dir / "hparams.yaml")

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        self.rows.append({**metrics, "step": step})

    def save(self) -> None:
        if not self.rows:
            return
        with open(self.dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted(set().union(*self.rows)))
            writer.writeheader()
            writer.writerows(self.rows)
