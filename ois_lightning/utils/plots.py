"""Matplotlib without pyplot state: a figure of panels, written atomically as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure


PANEL = 2.6  # inches per panel


def new_figure(rows: int, cols: int) -> tuple["Figure", np.ndarray]:
    """A matplotlib Figure (Agg, no pyplot state) with a (rows, cols) grid of axes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PANEL * cols, PANEL * rows), dpi=100)
    return fig, fig.subplots(rows, cols, squeeze=False)


def save_figure(fig: "Figure", path: str | Path) -> Path:
    """PNG written atomically."""
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format="png"), mode="wb")
