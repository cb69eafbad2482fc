"""Interactive prediction on one image: the public API (``from ois_lightning import Predictor``) and the engine of
the evaluation protocol (``eval.resize``, ``eval.zoom_in``, ``eval.flip``; docs/training.md has which reference
uses which). The API follows SAM's ``SamPredictor`` (``segment_anything/predictor.py``: ``set_image`` once,
``predict`` per prompt) on a self-describing checkpoint, as isegm's ``load_is_model``.

:class:`Predictor` encodes the image once in ``set_image`` (paper Fig. 2) and runs one decoder pass per click
round in ``predict``; the geometry is an :mod:`~ois_lightning.protocol.geometry` mapping. Zoom-in
(:mod:`~ois_lightning.protocol.zoom_in`) gives the model a crop from the 2nd click on: the encoder runs again whenever
the crop changes, as in the references, and the crop's probabilities are pasted into a zero full-image map; after
an empty prediction the full image runs and is squashed into the crop's box, as isegm does.
Flip runs the input and its mirror as a batch of two (two encodings per image or crop) and averages the
logits after un-mirroring, then the sigmoid, as the isegm predictor (``isegm/inference/predictors/base.py``:
``SigmoidForPred`` comes after ``AddHorizontalFlip`` in the inverse order, ``transforms/flip.py``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence, overload

import cv2
import numpy as np
import torch
from torch import Tensor

from ..config.schema import THRESHOLD
from .clicks import Click
from ..model.inputs import uses_depth
from ..data import Sample
from .geometry import Crop, Letterbox, Mapping, Squashed, Stretch, full_inputs, mirror
from .feature_cache import FeatureCache
from ..model import ImageEncoding, OISModel
from ..model.introspection import order_attention_weights
from ..model.order import order_maps
from ..model.prompts import NEG, PAD, POS
from .predictor_inputs import check_clicks, check_depth, check_image, check_prev_mask, click_arrays
from .zoom_in import ZoomIn

RESIZES = {"letterbox": Letterbox, "stretch": Stretch}
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}  # eval.precision: autocast

__all__ = ["Predictor", "click_arrays", "predictor_for", "protocol"]


class Predictor:
    """Interactive segmentation of one image at a time (paper Fig. 2: encode once, decode per click).

    ``set_image`` transforms and encodes; ``predict`` maps (y, x) clicks of the original image to input pixels,
    runs one click round and returns the bool mask and the float32 probabilities in the original resolution.
    The full-image encoder call goes through :meth:`encode`, so a feature cache can wrap or override it;
    zoom-in crops bypass the cache (they depend on the per-click parts' predictions, so rows rarely share them).

    Args:
        resize: ``letterbox`` or ``stretch`` (``eval.resize``). zoom_in_size: side of the model input for a
        zoom-in crop, None = no zoom-in. flip: average with the mirrored input (``eval.flip``). precision:
        ``eval.precision`` (:data:`PRECISIONS`): the encoder and decoder passes run under autocast to that dtype,
        the logits are cast to float32 before the flip average, resizing and sigmoid. depth_kind: convention
        of a depth map given to ``set_image`` (``data.depth.kind``). config: the resolved config, when known.
    """

    def __init__(self, model: OISModel, input_size: int, threshold: float = THRESHOLD, depth_from_sample: bool = False,
                 resize: str = "letterbox", zoom_in_size: int | None = None, flip: bool = False,
                 precision: str = "32-true", depth_kind: str = "disparity", config: Any = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"eval.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
        self.model = model
        self.input_size = input_size
        self.threshold = threshold
        self.depth_from_sample = depth_from_sample  # data.depth.source is file/gt: set_image needs a depth map
        self.resize: type[Letterbox] | type[Stretch] = RESIZES[str(getattr(resize, "value", resize))]
        self.zoom_in_size = zoom_in_size
        self.flip = flip
        self.precision = precision
        self.depth_kind = depth_kind
        self.config = config
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

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        overrides: Sequence[str] = ()) -> Predictor:
        """The model of a Lightning checkpoint from ``ois train``, rebuilt from the config it stores (dotlist
        ``overrides`` on top, e.g. ``["eval.precision=bf16-mixed"]``), weights loaded strictly, in eval mode on
        ``device`` (None: cuda if available, else cpu). A file that is no such checkpoint is a one-line
        CheckpointError; bad overrides, or protocol keys that differ from training, a ConfigError."""
        from ..checkpoint import load_checkpoint

        model, cfg = load_checkpoint(path, overrides=overrides)  # StoredConfigError is a CheckpointError
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return predictor_for(model.to(device), cfg)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def set_image(self, image: np.ndarray | Sample, depth: np.ndarray | None = None) -> None:
        """Transform the (H,W,3) uint8 RGB ``image`` to the input frame and run the encoder once (twice with
        flip: as one batch). ``depth`` (H,W) is needed iff the config reads depth from data (``data.depth.source``
        file or gt), ignored otherwise. The evaluation passes a dataset :class:`Sample` (image, depth, kind)."""
        if isinstance(image, Sample):
            sample = image
            if self.depth_from_sample and sample.depth is None:
                raise ValueError(f"sample {sample.id}: no depth map, but data.depth.source needs one (file or gt)")
        else:
            image = check_image(image)
            if self.depth_from_sample:
                depth = check_depth(depth, image.shape[:2])
            masks = np.zeros((0, *image.shape[:2]), np.int8)
            sample = Sample(image, masks, depth if self.depth_from_sample else None, "image", self.depth_kind)
        self.frame, x, d = self.resize.inputs(sample, self.input_size, self.device, self.depth_from_sample)
        self.original_size = sample.image.shape[:2]
        self.resized_size = self.frame.content
        self._depth_kind = sample.depth_kind
        self.enc = self.encode(*self._views(self.frame, x, d), sample.depth_kind)
        if self.zoom_in_size is not None:
            self._full = full_inputs(sample, self.device, self.depth_from_sample)
            self._crop = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the dtype of ``precision`` on the model's device; none for 32-true (so an outer autocast,
        Lightning's during validation, stays in force)."""
        dtype = PRECISIONS[self.precision]
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def encode(self, image: Tensor, depth: Tensor | None, depth_kind: str) -> ImageEncoding:
        """The one encoder pass per image, read from / written to ``feature_cache`` when one is set."""
        with self.autocast():
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

    def map_to_original(self, m: np.ndarray) -> np.ndarray:
        """A map over the model input (S,S) or the feature grid (h,w) -> the original frame (H,W), bilinear."""
        size = self.input_size
        m = cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR) if m.shape[0] != size else m
        rh, rw = self.resized_size
        return cv2.resize(m[:rh, :rw], self.original_size[::-1], interpolation=cv2.INTER_LINEAR)

    def _round_input(self, clicks: Sequence[Click]) -> tuple[Mapping, ImageEncoding]:
        """The mapping and encoding of this round: the full image, or with zoom-in the current crop (encoded
        when it changes), or after an empty prediction the full image squashed into the crop's box."""
        assert self.frame is not None and self.enc is not None
        if self.zoom_in_size is None:
            return self.frame, self.enc
        view = self._zoom.update(clicks, self._prev_prob)
        box = view.box
        if box is None:
            self._crop = None
            return self.frame, self.enc
        if view.squashed:
            return Squashed(self.frame, box), self.enc
        if self._crop is None or self._crop[0].box != box:
            crop = Crop.of(box, self.original_size, self.zoom_in_size, self.resize is Stretch)
            image, depth = self._full
            views = self._views(crop, crop.crop(image), None if depth is None else crop.crop(depth))
            with self.autocast():
                self._crop = crop, self.model.encode(*views, self._depth_kind)
        return self._crop

    def _clicks(self, points: np.ndarray, labels: np.ndarray) -> list[Click]:
        if self.enc is None:
            raise RuntimeError("Predictor: call set_image before predicting")
        return check_clicks(points, labels, self.original_size)

    @overload
    def predict(self, points: np.ndarray, labels: np.ndarray,
                prev_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    @overload
    def predict(self, points: Sequence[Click], labels: np.ndarray | None = None) -> np.ndarray: ...  # (clicks, prev)

    def predict(self, points, labels=None, prev_mask=None):
        """One click round: every click so far, ``points`` (K,2) (y, x) original pixels with ``labels`` (K,)
        1 positive / 0 negative, and the previous round's bool (H,W) mask (None: a new object) -> (bool (H,W)
        mask = prob > ``threshold``, float32 (H,W) probabilities). With zoom-in the crop follows the object of
        the previous call. The protocol's form ``predict(clicks, prev_mask)`` takes a list of
        :class:`~ois_lightning.protocol.clicks.Click` and returns the probabilities alone."""
        if isinstance(points, (list, tuple)) and points and isinstance(points[0], Click):
            return self._round(list(points), labels)
        clicks = self._clicks(points, labels)
        prob = self._round(clicks, check_prev_mask(prev_mask, self.original_size))
        return prob > self.threshold, prob

    @torch.no_grad()
    def _round(self, clicks: list[Click], prev_mask: np.ndarray | None) -> np.ndarray:
        """:meth:`predict` on validated clicks -> (H,W) float32 probabilities."""
        if self.enc is None:
            raise RuntimeError("Predictor: call set_image before predicting")
        if prev_mask is None:
            self._prev_prob = None  # a new object: zoom-in starts from the full image
        mapping, enc = self._round_input(clicks)
        coords, labels = self._tensors(mapping, [clicks])
        prev = mapping.mask(prev_mask).to(self.device) if prev_mask is not None else None  # 1,1,S,S
        with self.autocast():
            logits = self._decode(mapping, enc, coords, labels, prev)  # 1,1,S,S float32
        prob = mapping.to_original(logits)[0, 0].cpu().numpy()  # H,W
        if self.zoom_in_size is not None:
            self._prev_prob = prob
        return prob

    @torch.no_grad()
    def predict_batch(self, points_list: Sequence[np.ndarray], labels_list: Sequence[np.ndarray],
                      prev_masks: Sequence[np.ndarray | None] | None = None
                      ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """:meth:`predict` for several objects of the image, sharing its encoding -> (masks, probs), lists in
        order. One batched decoder call (clicks padded to the longest list) unless zoom-in crops each object on
        its own or only some objects have a previous mask: then one :meth:`predict` per object."""
        prevs = list(prev_masks) if prev_masks is not None else [None] * len(points_list)
        if not len(points_list) == len(labels_list) == len(prevs):
            raise ValueError(f"predict_batch: {len(points_list)} point arrays, {len(labels_list)} label arrays and "
                             f"{len(prevs)} previous masks; give one of each per object")
        if not prevs:
            return [], []
        clicks = [self._clicks(p, lab) for p, lab in zip(points_list, labels_list)]
        prevs = [check_prev_mask(m, self.original_size) for m in prevs]
        given = [m is not None for m in prevs]
        if self.zoom_in_size is not None or any(given) != all(given):
            pairs = [self.predict(p, lab, m) for p, lab, m in zip(points_list, labels_list, prevs)]
            return [m for m, _ in pairs], [p for _, p in pairs]
        assert self.frame is not None and self.enc is not None
        coords, labels = self._tensors(self.frame, clicks)
        prev = torch.cat([self.frame.mask(m) for m in prevs]).to(self.device) if all(given) else None  # B,1,S,S
        with self.autocast():
            logits = self._decode(self.frame, self.enc, coords, labels, prev)  # B,1,S,S
        probs = list(self.frame.to_original(logits)[:, 0].cpu().numpy())  # B x (H,W)
        return [p > self.threshold for p in probs], probs

    def _tensors(self, mapping: Mapping, objects: Sequence[Sequence[Click]]) -> tuple[Tensor, Tensor]:
        """Clicks of B objects -> coords (B,K,2) input pixels, labels (B,K), padded with label -1 (no click)."""
        k = max(map(len, objects))
        coords = torch.zeros(len(objects), k, 2)
        labels = torch.full((len(objects), k), PAD, dtype=torch.long)
        for b, clicks in enumerate(objects):
            coords[b, :len(clicks)] = torch.tensor([mapping.to_input(c.y, c.x) for c in clicks], dtype=torch.float32)
            labels[b, :len(clicks)] = torch.tensor([POS if c.positive else NEG for c in clicks])
        return coords.to(self.device), labels.to(self.device)

    def _decode(self, mapping: Mapping, enc: ImageEncoding, coords: Tensor, labels: Tensor,
                prev: Tensor | None) -> Tensor:
        """One decoder pass for B objects -> (B,1,S,S) float32 logits; with flip the mean of the input's and the
        un-mirrored mirror's logits (clicks mirrored x -> w - 1 - x, w the content width)."""
        b, views = coords.shape[0], 2 if self.flip else 1
        if b > 1:  # the image's encoding (one per view) repeated for every object
            enc = enc.select(torch.arange(views, device=coords.device).repeat_interleave(b))
        if not self.flip:
            return self.model(enc, coords, labels, prev).float()
        width = mapping.content[1]
        mirrored = torch.stack([coords[..., 0], width - 1 - coords[..., 1]], dim=-1)  # B,K,2
        prev = None if prev is None else torch.cat([prev, mirror(prev, width)])  # 2B,1,S,S
        logits = self.model(enc, torch.cat([coords, mirrored]), labels.repeat(2, 1), prev).float()  # 2B,1,S,S
        return 0.5 * (logits[:b] + mirror(logits[b:], width))

    @torch.no_grad()
    def order_map(self, points: np.ndarray, labels: np.ndarray, mode: str = "pos+neg") -> dict:
        """The order maps of these clicks on the model's depth, in the original frame (paper Fig. 3):
        ``positive`` (H,W) float32 shared by the positive clicks (Eq. 1; None without one), ``negatives`` one
        (H,W) per negative click in order (Eq. 2), ``depth`` (H,W) the normalised depth (1 = nearest).
        ``mode``: the click types that get a map (Table 9; the model's own is ``model.order_mode``)."""
        clicks = self._clicks(points, labels)
        assert self.enc is not None and self.frame is not None
        if self.enc.depth is None:
            raise ValueError("order maps need a model that reads depth (model.order or model.depth_encoder on)")
        depth = self.enc.depth[:1].float()  # 1,1,S,S (the unmirrored view with flip)
        coords, labels_t = self._tensors(self.frame, [clicks])  # 1,K,2 / 1,K
        maps = order_maps(depth, coords, labels_t, mode)[0].cpu().numpy()  # K,S,S
        positive = [k for k, c in enumerate(clicks) if c.positive]
        return {"positive": self.map_to_original(maps[positive[0]]) if positive else None,
                "negatives": [self.map_to_original(maps[k]) for k, c in enumerate(clicks) if not c.positive],
                "depth": self.map_to_original(depth[0, 0].cpu().numpy())}

    @torch.no_grad()
    def attention(self, points: np.ndarray, labels: np.ndarray, block: int = 0) -> dict:
        """Order-aware attention of fusion block ``block`` (paper Eq. 3, Fig. 6) in one round without a previous
        mask: for each click its token's weights over the feature grid, mean over heads, in the original frame
        (H,W) float32, ``before`` and ``after`` the order bias (lists in click order; None for a click beyond the
        model's slots)."""
        clicks = self._clicks(points, labels)
        assert self.enc is not None and self.frame is not None
        enc = self.enc.select(slice(0, 1))  # the unmirrored view with flip
        coords, labels_t = self._tensors(self.frame, [clicks])  # 1,K,2 / 1,K
        with self.autocast():
            before, after = order_attention_weights(self.model, enc, coords, labels_t, None, block)  # 1,h,N,L
        h, w = enc.feats[-1].shape[-2:]
        sparse = self.model.sparse
        rank = {True: iter(range(sparse.max_pos)), False: iter(range(sparse.max_pos, sparse.num_slots))}
        slots = [next(rank[c.positive], None) for c in clicks]

        def maps(weights: Tensor) -> list[np.ndarray | None]:
            grid = weights[0].float().mean(0).view(-1, h, w).cpu().numpy()  # N,h,w
            return [None if s is None else self.map_to_original(grid[s]) for s in slots]

        return {"before": maps(before), "after": maps(after), "block": block}


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
                     resize=p["resize"], zoom_in_size=p["zoom_in_size"], flip=p["flip"],
                     precision=str(cfg.eval.precision), depth_kind=str(cfg.data.depth.kind), config=cfg)
