"""The ``preprocess`` section of ``export.json`` (``ois export``): how to feed the graphs so that an onnxruntime
loop gives ``ois eval``'s masks, written from the rules the :class:`~ois_lightning.protocol.predictor.Predictor`
applies (:mod:`~ois_lightning.protocol.geometry`: ``Letterbox`` our eval transform, ``Stretch`` SegNext's
``preprocess`` / ``get_prompt_feats`` / ``postprocess`` in ``segnext/isegm/model/is_plainvit_model.py``).

Symbols: (H, W) the original image, S ``input_size``, (h, w) the image inside the S x S input.
"""
from __future__ import annotations

from typing import Any

NEAREST = "cv2.resize(..., interpolation=cv2.INTER_NEAREST_EXACT)"
RULES = {
    "letterbox": {
        "content": "h, w = max(1, round(H * (S / max(H, W)))), max(1, round(W * (S / max(H, W)))): float64, round "
                   "half to even (Python's round; albumentations LongestMaxSize)",
        "image": "uint8 RGB (H,W,3) -> cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR) on the uint8 "
                 "array -> top-left into zeros (S,S,3) -> float32 / 255 -> (1,3,S,S)",
        "raw_depth": "float32 (H,W) -> cv2.resize(depth, (w, h), interpolation=cv2.INTER_LINEAR) -> top-left into "
                     "zeros (S,S) -> (1,1,S,S)",
        "click": "(y, x) integer pixel of the original image -> ((y + 0.5) * h / H - 0.5, (x + 0.5) * w / W - 0.5) "
                 "in float64, fed as float32",
        "prev_mask": f"previous round's mask (prob > threshold) as uint8 (H,W) -> {NEAREST} to (w, h) -> top-left "
                     "into zeros (S,S) -> float32 (1,1,S,S)",
    },
    "stretch": {
        "content": "h, w = S, S (the aspect ratio is not kept)",
        "image": "uint8 RGB (H,W,3) -> float32 / 255 -> bilinear to (S,S), half-pixel centres, no antialiasing "
                 "(torch.nn.functional.interpolate(mode='bilinear', align_corners=False); cv2.resize(x, (S, S), "
                 "interpolation=cv2.INTER_LINEAR) of the float32 array agrees to float rounding) -> (1,3,S,S)",
        "raw_depth": "float32 (H,W) -> bilinear to (S,S) as the image -> (1,1,S,S)",
        "click": "(y, x) integer pixel of the original image -> (int(f(y) * f(S / H) + f(0.5)), int(f(x) * f(S / W) "
                 "+ f(0.5))) with f = numpy.float32: float32 arithmetic, then truncation (SegNext get_prompt_feats)",
        "prev_mask": f"previous round's mask (prob > threshold) as uint8 (H,W) -> {NEAREST} to (S, S) -> float32 "
                     "(1,1,S,S)",
    },
}


def preprocess(resize: str, size: int, threshold: float, mean: list[float], std: list[float],
               depth_input: bool) -> dict[str, Any]:
    """The ``preprocess`` section for ``eval.resize=resize`` at input side ``size``."""
    rules = dict(RULES[resize])
    if not depth_input:
        del rules["raw_depth"]
    return {"resize": resize, "input_size": size, "threshold": threshold, **rules,
            "normalisation": "inside encoder.onnx: it takes RGB in [0, 1] and computes (image - mean) / std per "
                             "channel", "mean": mean, "std": std,
            "coords": "(1,K,2) float32, every click so far in order, (y, x) input pixels (not SAM's (x, y)); labels "
                      "(1,K) int64 1 positive / 0 negative",
            "round_1": "prev_mask all zeros (the same logits as no previous mask)",
            "orig_im_size": "int64 [H, W] of the original image",
            "output": "click.onnx's prob (1,1,H,W) = sigmoid(bilinear (half-pixel) resize of logits[..., :h, :w] to "
                      "(H, W)); mask = prob > threshold"}
