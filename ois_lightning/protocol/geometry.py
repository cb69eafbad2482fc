"""Evaluation geometry: how one image (or a zoom-in crop of it) becomes the square model input, and back.

A mapping knows the original frame (H, W) and the S x S input frame, in which the image fills the top-left
``content`` (h, w) and the rest is zero padding. It maps integer clicks to input pixels (:meth:`to_input`),
the previous round's bool (H,W) prediction to a (1,1,S,S) {0,1} mask (:meth:`mask`) and the model's
(1,1,S,S) logits to the (1,1,H,W) probability map of the original frame (:meth:`to_original`; the logits there:
:meth:`logits_to_original`). :func:`letterbox_content` is the letterbox size rule on tensors, for ``ois export``.

* :class:`Letterbox` (``eval.resize=letterbox``): longest side to S, top-left pad; our training transform.
* :class:`Stretch` (``eval.resize=stretch``): the whole image to S x S ignoring the aspect ratio, as SegNext
  (``uncbiag/SegNext``, ``segnext/isegm/model/is_plainvit_model.py``: ``preprocess``, ``get_prompt_feats``,
  ``postprocess``).
* :class:`Crop` (``eval.zoom_in``): an inclusive box of the original image resized into the input, as the
  isegm ZoomIn (``SamsungLabs/ritm_interactive_segmentation`` and ``uncbiag/SimpleClick``,
  ``isegm/inference/transforms/zoom_in.py``: ``get_roi_image_nd``, ``_transform_clicks``, ``inv_transform``).
* :class:`Squashed` (``eval.zoom_in``, the round after an empty prediction): the full image's mapping whose
  probabilities ZoomIn's ``inv_transform`` resizes into the current crop's box.

:func:`mirror` is the horizontal flip of the input frame (``isegm/inference/transforms/flip.py``).

The previous mask stays binary in every mapping (OIS is trained on thresholded previous predictions, the
references feed their previous probability map): it is resampled with nearest neighbour.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import Sample, apply, build_eval_transform
from ..data.transforms import EXACT_NEAREST
from .zoom_in import Box

_letterbox_transform = lru_cache(maxsize=4)(build_eval_transform)  # one Pipeline per input size


class Mapping(Protocol):
    """Original frame <-> S x S input frame of one model input."""

    size: int  # S
    content: tuple[int, int]  # (h, w) of the image inside the input; padding beyond
    original: tuple[int, int]  # (H, W) of the original image

    def to_input(self, y: float, x: float) -> tuple[float, float]: ...

    def mask(self, prev: np.ndarray) -> Tensor: ...

    def to_original(self, logits: Tensor) -> Tensor: ...

    def logits_to_original(self, logits: Tensor) -> Tensor: ...


def _pad(t: Tensor, size: int) -> Tensor:
    """(..., h, w) -> (..., size, size), zeros bottom/right (top-left anchored)."""
    return F.pad(t, (0, size - t.shape[-1], 0, size - t.shape[-2]))


def _image_tensor(image: np.ndarray, device: torch.device) -> Tensor:
    """(H,W,3) uint8 RGB -> (1,3,H,W) float in [0, 1]."""
    return torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255.0


def _depth_tensor(depth: np.ndarray, device: torch.device) -> Tensor:
    """(H,W) depth -> (1,1,H,W) float32."""
    return torch.from_numpy(np.ascontiguousarray(depth, np.float32)).to(device)[None, None]


def full_inputs(sample: Sample, device: torch.device, with_depth: bool) -> tuple[Tensor, Tensor | None]:
    """The original image (1,3,H,W) in [0, 1] and, when ``with_depth``, its depth (1,1,H,W)."""
    depth = _depth_tensor(sample.depth, device) if with_depth else None
    return _image_tensor(sample.image, device), depth


@dataclass(frozen=True)
class Letterbox:
    """Longest side to ``size``, top-left pad (the eval transform of ``ois_lightning.data.transforms``)."""

    original: tuple[int, int]  # (H, W)
    content: tuple[int, int]  # (h, w) after the longest-side resize
    size: int

    @classmethod
    def inputs(cls, sample: Sample, size: int, device: torch.device, with_depth: bool
               ) -> tuple[Letterbox, Tensor, Tensor | None]:
        """The mapping of ``sample`` and its input image (1,3,S,S) and depth (1,1,S,S) or None."""
        x, _ = apply(_letterbox_transform(size), sample)
        assert x.valid is not None
        content = (int(x.valid.any(1).sum()), int(x.valid.any(0).sum()))
        depth = _depth_tensor(x.depth, device) if with_depth else None
        return cls(sample.image.shape[:2], content, size), _image_tensor(x.image, device), depth

    def to_input(self, y: float, x: float) -> tuple[float, float]:
        """Pixel centres map to pixel centres: ``(y + 0.5) * h / H - 0.5``."""
        (h, w), (rh, rw) = self.original, self.content
        return (y + 0.5) * rh / h - 0.5, (x + 0.5) * rw / w - 0.5

    def mask(self, prev: np.ndarray) -> Tensor:
        rh, rw = self.content
        resized = cv2.resize(prev.astype(np.uint8), (rw, rh), interpolation=EXACT_NEAREST)  # rh,rw
        padded = np.zeros((self.size, self.size), np.float32)
        padded[:rh, :rw] = resized
        return torch.from_numpy(padded)[None, None]  # 1,1,S,S

    def to_original(self, logits: Tensor) -> Tensor:
        """Padding cropped, logits resized bilinearly to (H, W), then the sigmoid."""
        return torch.sigmoid(self.logits_to_original(logits))

    def logits_to_original(self, logits: Tensor) -> Tensor:
        """(B,1,S,S) logits -> (B,1,H,W): padding cropped, resized bilinearly (``align_corners=False``)."""
        rh, rw = self.content
        return F.interpolate(logits[..., :rh, :rw].float(), size=self.original, mode="bilinear", align_corners=False)


def letterbox_content(original: Tensor, size: int) -> Tensor:
    """(2,) int64 (H, W) -> (2,) int64 (h, w) of the image inside a letterboxed input of side ``size``, as
    albumentations' ``LongestMaxSize`` (``max(1, round(side * (size / max(H, W))))`` in float64, half to even) for
    the graphs of ``ois export``, which compute it from an ``orig_im_size`` input."""
    hw = original.double()
    return torch.clamp(torch.round(hw * (size / hw.max())), min=1).long()


def segnext_round(v: float, size: int, extent: int) -> float:
    """``int(v * (size / extent) + 0.5)`` as SegNext computes it (``get_prompt_feats`` of its plain-ViT model, on
    an int64 tensor of clicks times a Python float): the ratio is taken to float32, multiplied and offset in
    float32, then truncated. In float64 the result differs on exact halves that float32 rounds the other way
    (1.4% of the rows of a 640 px side at 448 px)."""
    f = np.float32
    return float(int(f(v) * f(size / extent) + f(0.5)))


@dataclass(frozen=True)
class Stretch:
    """The whole image to ``size`` x ``size``, aspect ratio ignored (SegNext's evaluation)."""

    original: tuple[int, int]  # (H, W)
    size: int

    @property
    def content(self) -> tuple[int, int]:
        return self.size, self.size

    @classmethod
    def inputs(cls, sample: Sample, size: int, device: torch.device, with_depth: bool
               ) -> tuple[Stretch, Tensor, Tensor | None]:
        """Image and depth resized bilinearly (``align_corners=False``) to (1,C,S,S)."""
        image, depth = full_inputs(sample, device, with_depth)

        def resize(t: Tensor) -> Tensor:
            return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)

        return cls(sample.image.shape[:2], size), resize(image), None if depth is None else resize(depth)

    def to_input(self, y: float, x: float) -> tuple[float, float]:
        """SegNext's rule: ``int(y * S / H + 0.5)``, ``int(x * S / W + 0.5)``, in float32 as SegNext computes it
        (:func:`segnext_round`)."""
        (h, w), s = self.original, self.size
        return segnext_round(y, s, h), segnext_round(x, s, w)

    def mask(self, prev: np.ndarray) -> Tensor:
        resized = cv2.resize(prev.astype(np.uint8), (self.size, self.size), interpolation=EXACT_NEAREST)
        return torch.from_numpy(resized.astype(np.float32))[None, None]  # 1,1,S,S

    def to_original(self, logits: Tensor) -> Tensor:
        """Logits resized bilinearly (``align_corners=False``) to (H, W), then the sigmoid."""
        return torch.sigmoid(self.logits_to_original(logits))  # B,1,H,W

    def logits_to_original(self, logits: Tensor) -> Tensor:
        """(B,1,S,S) logits -> (B,1,H,W), resized bilinearly (``align_corners=False``)."""
        return F.interpolate(logits.float(), size=self.original, mode="bilinear", align_corners=False)


def _corner_index(n_in: int, n_out: int) -> np.ndarray:
    """Nearest source index of each of ``n_out`` samples with ``align_corners=True`` (end pixels aligned)."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    return np.rint(np.arange(n_out) * scale).astype(np.int64)


@dataclass(frozen=True)
class Crop:
    """The inclusive ``box`` of the original image in the input (isegm ZoomIn).

    The crop is resized bilinearly with ``align_corners=True`` to ``content``: ``size`` x ``size`` when
    stretched (SimpleClick's square target), else the longest side to ``size`` (RITM's integer target,
    ``round(h * size / max(h, w))``), then padded top-left. Clicks map as ``h' * (y - rmin) / h``; the
    probabilities (sigmoid first) are resized back to the box and pasted into a zero (H,W) map.
    """

    box: Box
    original: tuple[int, int]  # (H, W)
    content: tuple[int, int]  # (h', w') of the resized crop
    size: int

    @classmethod
    def of(cls, box: Box, original: tuple[int, int], size: int, stretch: bool) -> Crop:
        h, w = box.height, box.width
        if stretch:
            return cls(box, original, (size, size), size)
        scale = size / max(h, w)
        return cls(box, original, (int(round(h * scale)), int(round(w * scale))), size)

    def crop(self, t: Tensor) -> Tensor:
        """(1,C,H,W) original-frame image or depth -> (1,C,S,S) input."""
        b = self.box
        roi = t[..., b.rmin:b.rmax + 1, b.cmin:b.cmax + 1]  # 1,C,h,w
        return _pad(F.interpolate(roi, size=self.content, mode="bilinear", align_corners=True), self.size)

    def to_input(self, y: float, x: float) -> tuple[float, float]:
        (ch, cw), b = self.content, self.box
        return ch * (y - b.rmin) / b.height, cw * (x - b.cmin) / b.width

    def mask(self, prev: np.ndarray) -> Tensor:
        b, (ch, cw) = self.box, self.content
        rows = b.rmin + _corner_index(b.height, ch)
        cols = b.cmin + _corner_index(b.width, cw)
        resized = torch.from_numpy(prev[np.ix_(rows, cols)].astype(np.float32))  # h',w'
        return _pad(resized, self.size)[None, None]  # 1,1,S,S

    def to_original(self, logits: Tensor) -> Tensor:
        ch, cw = self.content
        return paste(torch.sigmoid(logits[..., :ch, :cw].float()), self.box, self.original)  # 1,1,H,W

    def logits_to_original(self, logits: Tensor) -> Tensor:
        """The logit of :meth:`to_original` (the crop resizes probabilities): -inf outside the box."""
        return torch.logit(self.to_original(logits))


def paste(prob: Tensor, box: Box, original: tuple[int, int]) -> Tensor:
    """(1,1,h,w) probabilities resized bilinearly (``align_corners=True``) to the inclusive ``box`` and pasted
    into a zero (1,1,H,W) map of the ``original`` (H, W) frame (isegm ``ZoomIn.inv_transform``)."""
    prob = F.interpolate(prob, size=(box.height, box.width), mode="bilinear", align_corners=True)
    full = prob.new_zeros((*prob.shape[:2], *original))  # 1,1,H,W
    full[..., box.rmin:box.rmax + 1, box.cmin:box.cmax + 1] = prob
    return full


@dataclass(frozen=True)
class Squashed:
    """The full image's ``frame`` (clicks, previous mask and logits as there) whose (H,W) probabilities are
    resized into ``box`` and pasted into a zero map: isegm ZoomIn's round after an empty prediction, where
    ``transform`` returns the full image but ``inv_transform`` still pastes into the current object ROI."""

    frame: Mapping
    box: Box

    @property
    def size(self) -> int:
        return self.frame.size

    @property
    def content(self) -> tuple[int, int]:
        return self.frame.content

    @property
    def original(self) -> tuple[int, int]:
        return self.frame.original

    def to_input(self, y: float, x: float) -> tuple[float, float]:
        return self.frame.to_input(y, x)

    def mask(self, prev: np.ndarray) -> Tensor:
        return self.frame.mask(prev)

    def to_original(self, logits: Tensor) -> Tensor:
        return paste(self.frame.to_original(logits), self.box, self.original)  # 1,1,H,W

    def logits_to_original(self, logits: Tensor) -> Tensor:
        """The logit of :meth:`to_original` (the crop resizes probabilities): -inf outside the box."""
        return torch.logit(self.to_original(logits))


def mirror(t: Tensor, width: int) -> Tensor:
    """Mirror the first ``width`` columns of an input-frame tensor (the image content); padding stays right.
    An input pixel x goes to ``width - 1 - x``; applying it twice is the identity."""
    out = t.clone()
    out[..., :width] = t[..., :width].flip(-1)
    return out
