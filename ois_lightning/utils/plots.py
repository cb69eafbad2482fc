"""Matplotlib without pyplot state, sized for a paper: a figure of panels (constrained layout, so colour bars and
titles get their room), fonts of at least 9 pt, colour bars with a label, integer click axes, and each figure
written atomically twice: a vector PDF and a 200-dpi PNG beside it, cropped to what is drawn (no clipped title)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.cm import ScalarMappable
    from matplotlib.colorbar import Colorbar
    from matplotlib.figure import Figure


PANEL = 2.6  # inches per panel
DPI = 200  # of the PNG; the PDF is vector (images inside it keep their own pixels)
FONT = 9  # pt: the smallest text (ticks, legends, colour bars, axis labels)
TITLE = 10  # pt: panel titles
SUPTITLE = 11  # pt: a figure's title
FORMATS = ("pdf", "png")  # written by save_figure


def new_figure(rows: int, cols: int, panel: float = PANEL) -> tuple["Figure", np.ndarray]:
    """A matplotlib Figure (Agg, no pyplot state, constrained layout) with a (rows, cols) grid of axes whose tick
    labels are :data:`FONT` pt."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel * cols, panel * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.tick_params(labelsize=FONT)
    return fig, axes


def colour_bar(fig: "Figure", mappable: "ScalarMappable", ax: "Axes", label: str) -> "Colorbar":
    """A colour bar beside ``ax`` for ``mappable`` (an ``imshow``), labelled in :data:`FONT` pt."""
    bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label(label, fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT)
    return bar


def integer_ticks(ax: "Axes") -> None:
    """Only whole numbers on the x axis (click counts: no tick at 2.5 clicks)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save_figure(fig: "Figure", path: str | Path) -> Path:
    """``path`` as a :data:`DPI`-dpi PNG and the same figure as vector PDF beside it (``path`` with ``.pdf``), both
    atomic and cropped to the drawn content (``bbox_inches='tight'``). -> the PNG's path."""
    path = Path(path).with_suffix(".png")
    for kind in FORMATS:
        atomic_write(path.with_suffix(f".{kind}"),
                     lambda f, kind=kind: fig.savefig(f, format=kind, dpi=DPI, bbox_inches="tight", pad_inches=0.05),
                     mode="wb")
    return path
