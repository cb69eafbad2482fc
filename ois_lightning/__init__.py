"""ois_lightning: Order-Aware Interactive Segmentation in PyTorch Lightning.

``from ois_lightning import Predictor``: a trained model on raw arrays (:mod:`ois_lightning.protocol.predictor`);
imported on first use, so importing the package (and the ``ois`` command) stays light. The layout of the package:
docs/architecture.md.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Predictor"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from .protocol.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'ois_lightning' has no attribute {name!r}")
