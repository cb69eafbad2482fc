"""What the network reads besides the image and the clicks, known from its settings before it is built."""
from __future__ import annotations

from typing import Any


def uses_depth(model: Any) -> bool:
    """Whether the network of a ``model`` config reads a depth map: order-aware attention on the sparse tokens
    (Sec. 3.2) or the depth encoder (App. A.4). Depth is loaded, predicted and validated only then."""
    return bool((model.order.enabled and model.sparse.enabled) or model.depth_encoder.enabled)
