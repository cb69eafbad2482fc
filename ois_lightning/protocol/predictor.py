"""Interactive prediction on one image: the public API (``from ois_lightning import Predictor``) and the engine of
the evaluation protocol (``eval.resize``, ``eval.zoom_in``, ``eval.flip``; docs/evaluation.md has which reference
uses which). The API follows SAM's ``SamPredictor`` (``segment_anything/predictor.py``: ``set_image`` once,
``predict`` per prompt, ``reset_image``, ``get_image_embedding``; ``predict`` also takes SAM's keywords, see
:mod:`~ois_lightning.protocol.predictor_sam`) on a self-describing checkpoint, as isegm's ``load_is_model``.

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
import warnings
from pathlib import Path
from typing import Any, Sequence, overload

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
from ..model.prompts import NEG, PAD, POS
from .predictor_inputs import check_clicks, check_depth, check_image, check_prev_mask, click_arrays, depth_advice
from .predictor_maps import PredictorMaps
from .predictor_sam import prev_from_logits, sam_result
from .zoom_in import ZoomIn

RESIZES = {"letterbox": Letterbox, "stretch": Stretch}
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}  # eval.precision: autocast

__all__ = ["Predictor", "click_arrays", "predictor_for", "protocol"]


class Predictor(PredictorMaps):
    """Interactive segmentation of one image at a time (paper Fig. 2: encode once, decode per click).

    ``set_image`` transforms and encodes; ``predict`` maps (y, x) clicks of the original image to input pixels,
    runs one click round and returns the bool mask and the float32 probabilities in the original resolution; with
    SAM's keywords (:mod:`~ois_lightning.protocol.predictor_sam`) it takes (x, y) clicks and returns SAM's triple.
    ``order_map`` and ``attention`` (:class:`~ois_lightning.protocol.predictor_maps.PredictorMaps`) show the order.
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
        CheckpointError; bad overrides, or protocol keys that differ from training, a ConfigError. A model that
        reads depth from data (``data.depth.source`` file or gt) warns in one line how to give depth."""
        from ..checkpoint import load_checkpoint

        model, cfg = load_checkpoint(path, overrides=overrides)  # StoredConfigError is a CheckpointError
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        predictor = predictor_for(model.to(device), cfg)
        if predictor.depth_from_sample:
            warnings.warn(f"ckpt={path} reads depth from data (data.depth.source={cfg.data.depth.source.value}): "
                          f"{predictor.depth_advice}", stacklevel=2)
        return predictor

    @property
    def depth_advice(self) -> str:
        """How to give depth to this model when it reads depth from data (:func:`depth_advice`)."""
        return depth_advice(self.depth_kind, self.can_predict_depth)

    @property
    def can_predict_depth(self) -> bool:
        """The model has a depth head or a separate depth model that can stand in for depth files."""
        return self.model.depth_head is not None or self.model.depth_model is not None

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
                depth = check_depth(depth, image.shape[:2], self.depth_advice)
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

    def reset_image(self) -> None:
        """Forget the image and its encoding (SAM's ``reset_image``); ``predict`` needs ``set_image`` again."""
        self.frame = self.enc = self._crop = self._prev_prob = None
        self.original_size = self.resized_size = (0, 0)
        self._full = (torch.empty(0), None)

    @property
    def is_image_set(self) -> bool:
        return self.enc is not None

    def get_image_embedding(self) -> ImageEncoding:
        """The encoding of the image set (SAM's ``get_image_embedding``): what every click round decodes from,
        ``feats`` 4 x (V,D,S/p,S/p) and ``depth`` (V,1,S,S) normalised or None; V = 2 with flip (image, mirror)."""
        if self.enc is None:
            raise RuntimeError("Predictor: call set_image before get_image_embedding")
        return self.enc

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

    def _clicks(self, points: object, labels: object, xy: bool = False) -> list[Click]:
        if self.enc is None:
            raise RuntimeError("Predictor: call set_image before predicting")
        return check_clicks(points, labels, self.original_size, xy)

    @overload
    def predict(self, points: np.ndarray, labels: np.ndarray,
                prev_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    @overload
    def predict(self, points: Sequence[Click], labels: np.ndarray | None = None) -> np.ndarray: ...  # (clicks, prev)

    @overload
    def predict(self, *, point_coords: np.ndarray, point_labels: np.ndarray, mask_input: np.ndarray | None = None,
                multimask_output: bool = True, return_logits: bool = False,
                box: None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def predict(self, points=None, labels=None, prev_mask=None, *, point_coords=None, point_labels=None,
                mask_input=None, multimask_output=True, return_logits=False, box=None):
        """One click round: every click so far, ``points`` (K,2) (y, x) original pixels with ``labels`` (K,)
        1 positive / 0 negative, and the previous round's bool (H,W) mask (None: a new object) -> (bool (H,W)
        mask = prob > ``threshold``, float32 (H,W) probabilities). With zoom-in the crop follows the object of
        the previous call. The protocol's form ``predict(clicks, prev_mask)`` takes a list of
        :class:`~ois_lightning.protocol.clicks.Click` and returns the probabilities alone.

        SAM's form (keywords only, :mod:`~ois_lightning.protocol.predictor_sam`): ``point_coords`` (K,2) (x, y),
        ``point_labels`` (K,), ``mask_input`` the previous round's (1,H,W) logits -> ``(masks (1,H,W), scores
        (1,), logits (1,H,W))``, the same round as the (y, x) form; ``multimask_output`` is accepted (C = 1),
        ``box`` is refused (OIS takes clicks)."""
        if isinstance(points, (list, tuple)) and points and isinstance(points[0], Click):
            return self._round(list(points), labels)[0]
        sam = {"point_coords": point_coords, "point_labels": point_labels, "mask_input": mask_input, "box": box,
               "return_logits": return_logits or None}
        if points is None:
            if box is not None:
                raise ValueError("box: OIS takes clicks only; give point_coords (K,2) (x, y) and point_labels (K,)")
            clicks = self._clicks(point_coords, point_labels, xy=True)
            prob, logits = self._round(clicks, prev_from_logits(mask_input, self.original_size, self.threshold),
                                       logits=True)
            return sam_result(prob, logits, self.threshold, return_logits)
        if given := [k for k, v in sam.items() if v is not None]:
            raise ValueError(f"predict: {', '.join(given)} belong to SAM's call (point_coords (x, y) -> masks, scores, "
                             "logits); with (y, x) points give labels and prev_mask")
        clicks = self._clicks(points, labels)
        prob = self._round(clicks, check_prev_mask(prev_mask, self.original_size))[0]
        return prob > self.threshold, prob

    @torch.no_grad()
    def _round(self, clicks: list[Click], prev_mask: np.ndarray | None, logits: bool = False
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict` on validated clicks -> (H,W) float32 probabilities and, when ``logits``, the (H,W)
        float32 logits in the original frame (else None)."""
        if self.enc is None:
            raise RuntimeError("Predictor: call set_image before predicting")
        if prev_mask is None:
            self._prev_prob = None  # a new object: zoom-in starts from the full image
        mapping, enc = self._round_input(clicks)
        coords, labels = self._tensors(mapping, [clicks])
        prev = mapping.mask(prev_mask).to(self.device) if prev_mask is not None else None  # 1,1,S,S
        with self.autocast():
            out = self._decode(mapping, enc, coords, labels, prev)  # 1,1,S,S float32
        original = mapping.logits_to_original(out)  # 1,1,H,W float32, resized once for both outputs
        prob = torch.sigmoid(original)[0, 0].cpu().numpy()  # H,W
        if self.zoom_in_size is not None:
            self._prev_prob = prob
        return prob, original[0, 0].cpu().numpy() if logits else None

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
