"""Plain ``nn.Module`` parts of OIS (no Lightning here)."""
from .ois import ImageEncoding, OISModel, build_model

__all__ = ["ImageEncoding", "OISModel", "build_model"]
