"""Separate monocular depth models for the order maps (paper App. A.9, Table 6): ``data.depth.model``.

A :class:`DepthModel` maps an RGB image to a depth map and says which convention the map has: Depth Anything
V1 / V2 give relative disparity (``kind="disparity"``, larger = closer); ZoeDepth gives metric depth
(``kind="depth"``, larger = farther). :func:`~ois_lightning.model.order.normalize_depth` turns either into the
[0, 1] map (1 = nearest) the order maps use.

Depth Anything variants run on our own ViT + DPT (:func:`~ois_lightning.model.backbones.build`), loading an
official ``.pth`` or an HF directory. ZoeDepth runs through transformers' ``ZoeDepthForDepthEstimation``, loaded
only from a local directory (``local_files_only``; the hub is never contacted).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import SPECS, build
from .checkpoints import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ZOEDEPTH = "zoedepth"
ZOEDEPTH_MULTIPLE = 32  # ensure_multiple_of of ZoeDepth's image processor


def depth_model_names() -> list[str]:
    """Valid ``data.depth.model`` values: Depth Anything backbones with a depth head, and ZoeDepth."""
    return [name for name, spec in SPECS.items() if spec.has_depth_head and name != "tiny"] + [ZOEDEPTH]


def depth_model_kind(name: str) -> str:
    """The convention of ``name``'s output: "depth" (metric, ZoeDepth) or "disparity" (any backbone of SPECS
    with a Depth Anything head, including the test-only "tiny")."""
    if name == ZOEDEPTH:
        return "depth"
    if name in SPECS and SPECS[name].has_depth_head:
        return "disparity"
    raise ValueError(f"unknown depth model {name!r}; known: {', '.join(depth_model_names())}")


def resize_for(height: int, width: int, side: int, multiple: int) -> tuple[int, int]:
    """Aspect-preserving size whose longer side is about ``side``; both sides rounded to ``multiple``."""
    scale = side / max(height, width)
    h, w = (max(multiple, round(s * scale / multiple) * multiple) for s in (height, width))
    return h, w


class DepthModel(nn.Module):
    """A frozen depth network. Subclasses implement :meth:`raw` at sizes that are multiples of ``multiple``."""

    def __init__(self, kind: str, multiple: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.kind, self.multiple = kind, multiple
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def raw(self, image: Tensor) -> Tensor:
        """Normalised image (B,3,h,w), sides multiples of ``multiple`` -> (B,1,h,w) map of ``kind``."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, image: Tensor, side: int | None = None) -> Tensor:
        """image (B,3,H,W) RGB in [0,1] -> (B,1,H,W) map of ``kind``, computed with the longer side resized to
        ``side`` (default max(H, W)), sides rounded to ``multiple``, and resized back bilinearly."""
        h, w = image.shape[-2:]
        size = resize_for(h, w, side or max(h, w), self.multiple)
        x = image if size == (h, w) else F.interpolate(image, size, mode="bilinear", antialias=True)
        out = self.raw((x - self.mean) / self.std)
        return out if size == (h, w) else F.interpolate(out, (h, w), mode="bilinear", align_corners=False)

    def predict(self, image: np.ndarray, side: int) -> tuple[np.ndarray, str]:
        """One H,W,3 uint8 RGB image -> (H,W float32 map, kind), the model run at longer side ``side``."""
        device = self.mean.device
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0
        return self(x, side)[0, 0].float().cpu().numpy(), self.kind


class DepthAnythingDepth(DepthModel):
    """Depth Anything V1 / V2 (relative disparity) on our ViT + DPT."""

    def __init__(self, name: str, checkpoint: str | Path | None) -> None:
        net = build(name, checkpoint)
        super().__init__("disparity", net.spec.patch_size, IMAGENET_MEAN, IMAGENET_STD)
        self.net = net.eval().requires_grad_(False)

    def raw(self, image: Tensor) -> Tensor:
        return self.net(image)


class ZoeDepthDepth(DepthModel):
    """ZoeDepth (metric depth) through transformers, from a local HF directory. Normalisation follows the
    directory's ``preprocessor_config.json`` when present (else ZoeDepth's mean = std = 0.5); unlike the HF
    image processor, the input is not reflect-padded."""

    def __init__(self, folder: str | Path | None) -> None:
        if folder is None or not (Path(folder) / "config.json").is_file():
            raise CheckpointError(
                f"{folder}: data.depth.model=zoedepth needs data.depth.checkpoint = a local HF ZoeDepth directory "
                "(config.json + model.safetensors; weights are never downloaded)"
            )
        folder = Path(folder)
        pre = folder / "preprocessor_config.json"
        config = json.loads(pre.read_text()) if pre.is_file() else {}
        mean, std = config.get("image_mean", (0.5,) * 3), config.get("image_std", (0.5,) * 3)
        super().__init__("depth", ZOEDEPTH_MULTIPLE, tuple(mean), tuple(std))
        from transformers import ZoeDepthForDepthEstimation

        try:
            model = ZoeDepthForDepthEstimation.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{folder}: cannot load a ZoeDepth model: {str(e).splitlines()[0]}") from e
        self.net = model.eval().requires_grad_(False)

    def raw(self, image: Tensor) -> Tensor:
        return self.net(pixel_values=image).predicted_depth[:, None]  # B,1,h,w


def build_depth_model(name: str, checkpoint: str | Path | None = None) -> DepthModel:
    """``data.depth.model`` -> a frozen DepthModel in eval mode. Depth Anything without a checkpoint is
    random-init (tests); ZoeDepth needs its local directory."""
    depth_model_kind(name)  # validates the name
    model = ZoeDepthDepth(checkpoint) if name == ZOEDEPTH else DepthAnythingDepth(name, checkpoint)
    return model.eval()
