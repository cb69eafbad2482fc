"""Plain ``nn.Module`` parts of OIS (no Lightning here).

``ImageEncoding``, ``OISModel`` and ``build_model`` (from :mod:`.ois`) are loaded when first asked for, so that
importing a light module of the package (:mod:`.specs`, the backbone names a config check needs) does not import
timm and torchvision."""
from __future__ import annotations

from typing import Any

__all__ = ["ImageEncoding", "OISModel", "build_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import ois

        return getattr(ois, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
