"""SAM's call on :class:`~ois_lightning.protocol.predictor.Predictor`: the keywords and return values of
segment-anything's ``SamPredictor.predict`` (``segment_anything/predictor.py``) mapped onto one OIS click round.

* ``point_coords`` (N,2) (x, y) pixels and ``point_labels`` (N,) 1 positive / 0 negative are the clicks of the
  (y, x) call, columns swapped; every click so far, as in the (y, x) call.
* ``mask_input``: logits of the previous round at the original size, (1,H,W) or (H,W): this call's third output.
  The model's previous mask is ``sigmoid(mask_input) > threshold``, as the (y, x) call's ``prev_mask`` is
  ``prob > threshold`` (SAM's is a 256 x 256 low-resolution map; OIS feeds the previous mask in the original
  frame, the isegm protocol, so its logits are at that size).
* Returns ``masks`` (1,H,W) bool (float32 logits with ``return_logits``), ``scores`` (1,) float32 and ``logits``
  (1,H,W) float32. OIS decodes one mask per round, so C = 1 whatever ``multimask_output`` asks.
* The score is the mean probability inside the mask (0 for an empty mask): OIS has no IoU head; a confident
  mask scores near 1, one whose pixels barely pass the threshold near it.
"""
from __future__ import annotations

import numpy as np
import torch

from .predictor_inputs import describe


def prev_from_logits(mask_input: object, size: tuple[int, int], threshold: float) -> np.ndarray | None:
    """SAM's ``mask_input`` (None, or float logits (1,H,W) / (H,W) of the original image) -> the bool (H,W) previous
    mask ``sigmoid(logits) > threshold``."""
    if mask_input is None:
        return None
    shape = getattr(mask_input, "shape", None)
    if not (isinstance(mask_input, np.ndarray) and np.issubdtype(mask_input.dtype, np.floating)
            and shape in ((1, *size), size)):
        raise ValueError(f"mask_input: expected None or float logits of shape (1,{size[0]},{size[1]}) (the third "
                         f"output of the previous SAM-style predict), got {describe(mask_input)}")
    logits = torch.from_numpy(np.ascontiguousarray(mask_input, np.float32).reshape(size))
    return (torch.sigmoid(logits) > threshold).numpy()


def mask_score(prob: np.ndarray, mask: np.ndarray) -> float:
    """The mean probability inside ``mask`` (0.0 for an empty mask)."""
    return float(prob[mask].mean()) if mask.any() else 0.0


def sam_result(prob: np.ndarray, logits: np.ndarray, threshold: float, return_logits: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H,W) probabilities and logits of one round -> SAM's ``(masks (1,H,W), scores (1,), logits (1,H,W))``; the
    masks are ``prob > threshold``, or the logits themselves with ``return_logits``."""
    mask = prob > threshold
    scores = np.array([mask_score(prob, mask)], np.float32)
    return (logits if return_logits else mask)[None], scores, logits[None]
