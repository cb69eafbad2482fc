"""``ois app``: a local web app to click on an image and see OIS's mask, depth and order maps (docs/app.md)."""
from .server import DEFAULT_HOST, DEFAULT_PORT, AppServer, run_app
from .session import Forbidden, ModelAdapter, Session

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "AppServer", "Forbidden", "ModelAdapter", "Session", "run_app"]
