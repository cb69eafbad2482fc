"""The fixed training budgets of ``ois pretrain`` (no torch import: the CLI shows them in ``--help``).

The defaults were set before the final runs (docs/pretraining.md) so that each command finishes in a few minutes
on 2 CPU cores; they are not tuned to the numbers those runs report.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Union

from ..config.schema import ConfigError


@dataclass(frozen=True)
class DepthBudget:
    """``ois pretrain depth``: steps x batch training scenes at size x size, and the held-out evaluation."""

    steps: int = 1000
    batch: int = 8
    size: int = 112  # the demo's input size; a multiple of the backbone's patch
    backbone: str = "tiny"  # a name of model.backbones.SPECS with a depth head
    seed: int = 0  # initialisation
    lr: float = 1e-3
    weight_decay: float = 0.05
    heldout: int = 48  # held-out scenes for AbsRel / delta<1.25
    scenes: str = "monocular"  # the scenes' depth cues: a preset or comma-separated cue names (data/monocular.py)


@dataclass(frozen=True)
class MAEBudget:
    """``ois pretrain mae``: steps x batch scenes at the position table's size (224 = 14 x 16, as MAE), and the
    decoder's shape (MAE-B: 512 wide, 8 blocks; here in proportion to the 64-wide ViT)."""

    steps: int = 200
    batch: int = 8
    seed: int = 0  # initialisation and masks
    lr: float = 1e-3
    weight_decay: float = 0.05
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    heldout: int = 32  # held-out scenes for the reconstruction loss
    scenes: str = "monocular"  # as DepthBudget.scenes


Budget = Union[DepthBudget, MAEBudget]


def budget_for(what: str, **given: Any) -> Budget:
    """The budget of ``ois pretrain <what>`` (depth / mae): its defaults with the ``given`` fields replaced."""
    return replace(DepthBudget() if what == "depth" else MAEBudget(), **given)


def report_path(out: Path) -> Path:
    """The JSON report beside a checkpoint: ``x.pth`` -> ``x.json``."""
    return out.with_suffix(".json")


def finished_report(out: Path, budget: Budget) -> dict | None:
    """The report of a finished run into ``out`` (one whose report, written last, exists) or None; a run made
    with another budget is refused (ConfigError)."""
    report = report_path(out)
    if not (out.is_file() and report.is_file()):
        return None
    done = json.loads(report.read_text())
    if done.get("settings") != asdict(budget):
        raise ConfigError(f"{out}: made with {done.get('settings')}, not {asdict(budget)}; pass --force to "
                          "overwrite or choose another --out")
    return done


def reuse_line(out: Path) -> str:
    """What ``ois pretrain`` prints when it reuses a finished run."""
    return f"{out}: exists with the same settings, reusing it (--force retrains)"
