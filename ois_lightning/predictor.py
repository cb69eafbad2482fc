"""Interactive prediction on one image under a selectable evaluation protocol (``eval.resize``, ``eval.zoom_in``,
``eval.flip``; docs/training.md has which reference uses which).

:class:`Predictor` encodes the image once in ``set_image`` (paper Fig. 2) and runs one decoder pass per click
round in ``predict``; the geometry is an :mod:`~ois_lightning.eval_geometry` mapping. Zoom-in
(:mod:`~ois_lightning.zoom_in`) gives the model a crop from the 2nd click on: the encoder runs again whenever
the crop changes, as in the references, and the crop's probabilities are pasted into a zero full-image map.
Flip runs the input and its mirror as a batch of two (two encodings per image or crop) and averages the
logits after un-mirroring, then the sigmoid, as the isegm predictor (``isegm/inference/predictors/base.py``:
``SigmoidForPred`` comes after ``AddHorizontalFlip`` in the inverse order, ``transforms/flip.py``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .clicks import Click
from .config import uses_depth
from .data import Sample
from .eval_geometry import Crop, Letterbox, Mapping, Stretch, full_inputs, mirror
from .feature_cache import FeatureCache
from .model import ImageEncoding, OISModel
from .model.prompts import NEG, POS
from .zoom_in import ZoomIn

RESIZES = {"letterbox": Letterbox, "stretch": Stretch}


class Predictor:
    """Interactive prediction on one image at a time (paper Fig. 2: encode once, decode per click).

    ``set_image`` transforms and encodes; ``predict`` maps integer (y, x) clicks of the original image to
    input pixels, runs one click round and returns the (H,W) probability map in the original resolution.
    The full-image encoder call goes through :meth:`encode`, so a feature cache can wrap or override it;
    zoom-in crops bypass the cache (they depend on the per-click parts' predictions, so rows rarely share them).

    Args:
        resize: ``letterbox`` or ``stretch`` (``eval.resize``). zoom_in_size: side of the model input for a
        zoom-in crop, None = no zoom-in. flip: average with the mirrored input (``eval.flip``).
    """

    def __init__(self, model: OISModel, input_size: int, threshold: float = 0.49, depth_from_sample: bool = False,
                 resize: str = "letterbox", zoom_in_size: int | None = None, flip: bool = False) -> None:
        self.model = model
        self.input_size = input_size
        self.threshold = threshold
        self.depth_from_sample = depth_from_sample  # data.depth.source is file/gt: the sample carries depth
        self.resize: type[Letterbox] | type[Stretch] = RESIZES[str(getattr(resize, "value", resize))]
        self.zoom_in_size = zoom_in_size
        self.flip = flip
        self.frame: Mapping | None = None  # the full image's mapping
        self.enc: ImageEncoding | None = None  # its encoding (batch 2 with flip: image, mirror)
        self.original_size = (0, 0)  # (H, W) of the original image
        self.resized_size = (0, 0)  # (h, w) of the image inside the padded input
        self.feature_cache: FeatureCache | None = None  # eval.feature_cache: encodings shared across runs
        self._zoom = ZoomIn()
        self._full: tuple[Tensor, Tensor | None] = (torch.empty(0), None)  # zoom-in: original image, depth
        self._depth_kind = "disparity"
        self._crop: tuple[Crop, ImageEncoding] | None = None  # the current zoom-in crop and its encoding
        self._prev_prob: np.ndarray | None = None  # zoom-in: the previous round's (H,W) probabilities

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def set_image(self, sample: Sample) -> None:
        """Transform ``sample`` to the input frame and run the encoder once (twice with flip: as one batch)."""
        if self.depth_from_sample and sample.depth is None:
            raise ValueError(f"sample {sample.id}: no depth map, but data.depth.source needs one (file or gt)")
        self.frame, image, depth = self.resize.inputs(sample, self.input_size, self.device, self.depth_from_sample)
        self.original_size = sample.image.shape[:2]
        self.resized_size = self.frame.content
        self._depth_kind = sample.depth_kind
        self.enc = self.encode(*self._views(self.frame, image, depth), sample.depth_kind)
        if self.zoom_in_size is not None:
            self._full = full_inputs(sample, self.device, self.depth_from_sample)
            self._crop = None

    def encode(self, image: Tensor, depth: Tensor | None, depth_kind: str) -> ImageEncoding:
        """The one encoder pass per image, read from / written to ``feature_cache`` when one is set."""
        if self.feature_cache is not None:
            return self.feature_cache.encode(image, depth, depth_kind)
        return self.model.encode(image, depth, depth_kind)

    def _views(self, mapping: Mapping, image: Tensor, depth: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The encoder batch: the input alone, or with flip the input and its mirror (B = 2)."""
        if not self.flip:
            return image, depth
        width = mapping.content[1]

        def both(t: Tensor) -> Tensor:
            return torch.cat([t, mirror(t, width)])

        return both(image), None if depth is None else both(depth)

    def to_input(self, y: float, x: float) -> tuple[float, float]:
        """Original pixel (y, x) -> input pixel of the full image (the first click's frame)."""
        assert self.frame is not None
        return self.frame.to_input(y, x)

    def _round_input(self, clicks: Sequence[Click]) -> tuple[Mapping, ImageEncoding]:
        """The mapping and encoding of this round: the full image, or with zoom-in the current crop (encoded
        when it changes)."""
        assert self.frame is not None and self.enc is not None
        if self.zoom_in_size is None:
            return self.frame, self.enc
        box = self._zoom.update(clicks, self._prev_prob)
        if box is None:
            self._crop = None
            return self.frame, self.enc
        if self._crop is None or self._crop[0].box != box:
            crop = Crop.of(box, self.original_size, self.zoom_in_size, self.resize is Stretch)
            image, depth = self._full
            views = self._views(crop, crop.crop(image), None if depth is None else crop.crop(depth))
            self._crop = crop, self.model.encode(*views, self._depth_kind)
        return self._crop

    @torch.no_grad()
    def predict(self, clicks: Sequence[Click], prev_mask: np.ndarray | None = None) -> np.ndarray:
        """One click round: all ``clicks`` so far (original pixels) and the previous round's bool (H,W)
        prediction (None in round 1) -> (H,W) float32 probability in the original resolution."""
        if self.enc is None:
            raise RuntimeError("Predictor.predict called before set_image")
        if prev_mask is None:
            self._prev_prob = None  # a new object: zoom-in starts from the full image
        mapping, enc = self._round_input(clicks)
        coords = torch.tensor([mapping.to_input(c.y, c.x) for c in clicks], dtype=torch.float32,
                              device=self.device).view(1, -1, 2)  # 1,K,2
        labels = torch.tensor([POS if c.positive else NEG for c in clicks], dtype=torch.long,
                              device=self.device).view(1, -1)  # 1,K
        prev = mapping.mask(prev_mask).to(self.device) if prev_mask is not None else None  # 1,1,S,S
        logits = self._decode(mapping, enc, coords, labels, prev)  # 1,1,S,S
        prob = mapping.to_original(logits)[0, 0].cpu().numpy()  # H,W
        if self.zoom_in_size is not None:
            self._prev_prob = prob
        return prob

    def _decode(self, mapping: Mapping, enc: ImageEncoding, coords: Tensor, labels: Tensor,
                prev: Tensor | None) -> Tensor:
        """One decoder pass -> (1,1,S,S) logits; with flip the mean of the input's and the un-mirrored
        mirror's logits (clicks mirrored x -> w - 1 - x, w the content width)."""
        if not self.flip:
            return self.model(enc, coords, labels, prev)
        width = mapping.content[1]
        mirrored = torch.stack([coords[..., 0], width - 1 - coords[..., 1]], dim=-1)  # 1,K,2
        prev = None if prev is None else torch.cat([prev, mirror(prev, width)])  # 2,1,S,S
        logits = self.model(enc, torch.cat([coords, mirrored]), labels.repeat(2, 1), prev)  # 2,1,S,S
        return 0.5 * (logits[:1] + mirror(logits[1:], width))


def protocol(cfg: Any) -> dict:
    """The protocol of ``cfg.eval`` as results.json records it (``zoom_in_size`` resolved, None without zoom-in)."""
    e = cfg.eval
    size = (e.zoom_in_size or cfg.model.input_size) if e.zoom_in else None
    return {"resize": str(getattr(e.resize, "value", e.resize)), "zoom_in": bool(e.zoom_in),
            "zoom_in_size": size, "flip": bool(e.flip)}


def predictor_for(model: OISModel, cfg: Any) -> Predictor:
    """The :class:`Predictor` a config asks for (input size, threshold, where depth comes from, protocol)."""
    p = protocol(cfg)
    return Predictor(model, cfg.model.input_size, cfg.clicks.threshold,
                     depth_from_sample=cfg.data.depth.source in ("file", "gt") and uses_depth(cfg.model),
                     resize=p["resize"], zoom_in_size=p["zoom_in_size"], flip=p["flip"])
