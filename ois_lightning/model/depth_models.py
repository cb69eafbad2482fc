"""Separate monocular depth models for the order maps (paper App. A.9, Table 6): ``data.depth.model``.

A :class:`DepthModel` maps an RGB image to a depth map and says which convention the map has: Depth Anything
V1 / V2 give relative disparity (``kind="disparity"``, larger = closer); ZoeDepth gives metric depth
(``kind="depth"``, larger = farther). :func:`~ois_lightning.model.order.normalize_depth` turns either into the
[0, 1] map (1 = nearest) the order maps use.

Depth Anything variants run on our own ViT + DPT (:func:`~ois_lightning.model.backbones.build`), loading an
official ``.pth`` or a model directory. ZoeDepth runs through transformers' ``ZoeDepthForDepthEstimation``, loaded
only from a local directory (``local_files_only``; the hub is never contacted) by transformers' own loader (which
maps the published key names onto its current modules), made strict: a missing, unexpected or mis-shaped key is a
CheckpointError naming it.

``preprocess`` (``data.depth.preprocess``) says how an image is brought to the model: "official" as the model's
own inference code does it (:meth:`DepthModel.official`), "input" at a given longer side (:meth:`DepthModel.at_side`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .specs import ZOEDEPTH, depth_model_kind
from .backbones import build
from .checkpoints import CheckpointError, misshaped_entry, raise_on_mismatch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ZOEDEPTH_MULTIPLE = 32  # ensure_multiple_of of ZoeDepth's image processor
PREPROCESS = ("official", "input")
DA_INPUT_SIZE = 518  # input_size of Depth Anything's infer_image


def resize_for(height: int, width: int, side: int, multiple: int) -> tuple[int, int]:
    """Aspect-preserving size whose longer side is about ``side``; both sides rounded to ``multiple``."""
    scale = side / max(height, width)
    h, w = (max(multiple, round(s * scale / multiple) * multiple) for s in (height, width))
    return h, w


def lower_bound_size(height: int, width: int, side: int, multiple: int) -> tuple[int, int]:
    """Depth Anything's ``Resize(side, side, keep_aspect_ratio=True, ensure_multiple_of=multiple,
    resize_method="lower_bound")`` (DepthAnything/Depth-Anything-V2 ``depth_anything_v2/util/transform.py``,
    ``get_size`` / ``constrain_to_multiple_of``): the shorter side scaled to ``side``, both sides rounded
    (half to even, as ``np.round``) to ``multiple``, and raised to the next multiple where that falls below ``side``."""
    scale = max(side / height, side / width)

    def constrain(x: float) -> int:
        y = round(x / multiple) * multiple
        return math.ceil(x / multiple) * multiple if y < side else y

    return constrain(scale * height), constrain(scale * width)


class DepthModel(nn.Module):
    """A frozen depth network. Subclasses implement :meth:`raw` at sizes that are multiples of ``multiple``, and
    :meth:`official`, the model's own inference preprocessing."""

    def __init__(
        self, kind: str, multiple: int, mean: tuple[float, ...], std: tuple[float, ...], preprocess: str
    ) -> None:
        super().__init__()
        if preprocess not in PREPROCESS:
            raise ValueError(f"data.depth.preprocess={preprocess!r} is not one of {PREPROCESS}")
        self.kind, self.multiple, self.preprocess = kind, multiple, preprocess
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def raw(self, image: Tensor) -> Tensor:
        """Normalised image (B,3,h,w), sides multiples of ``multiple`` -> (B,1,h,w) map of ``kind``."""
        raise NotImplementedError

    def official(self, image: Tensor) -> Tensor:
        """image (B,3,H,W) RGB in [0,1] -> (B,1,H,W), preprocessed and resized back as the official code does."""
        raise NotImplementedError

    def at_side(self, image: Tensor, side: int | None) -> Tensor:
        """image (B,3,H,W) RGB in [0,1] -> (B,1,H,W), the model run with the longer side resized to ``side``
        (default max(H, W)), sides rounded to ``multiple``, and resized back bilinearly."""
        h, w = image.shape[-2:]
        size = resize_for(h, w, side or max(h, w), self.multiple)
        x = image if size == (h, w) else F.interpolate(image, size, mode="bilinear", antialias=True)
        out = self.raw((x - self.mean) / self.std)
        return out if size == (h, w) else F.interpolate(out, (h, w), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(self, image: Tensor, side: int | None = None) -> Tensor:
        """image (B,3,H,W) RGB in [0,1] -> (B,1,H,W) map of ``kind``; ``side`` is used by preprocess "input"."""
        return self.official(image) if self.preprocess == "official" else self.at_side(image, side)

    def predict(self, image: np.ndarray, side: int | None = None) -> tuple[np.ndarray, str]:
        """One H,W,3 uint8 RGB image -> (H,W float32 map, kind)."""
        device = self.mean.device
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0
        return self(x, side)[0, 0].float().cpu().numpy(), self.kind


class DepthAnythingDepth(DepthModel):
    """Depth Anything V1 / V2 (relative disparity) on our ViT + DPT."""

    def __init__(self, name: str, checkpoint: str | Path | None, preprocess: str = "official") -> None:
        net = build(name, checkpoint)
        super().__init__("disparity", net.spec.patch_size, IMAGENET_MEAN, IMAGENET_STD, preprocess)
        self.net = net.eval().requires_grad_(False)
        # the map goes back to the image size with align_corners=True in DAv2's infer_image
        # (depth_anything_v2/dpt.py), with align_corners=False in DAv1's run.py (LiheYoung/Depth-Anything)
        self.align_back = not name.startswith("dav1")

    def raw(self, image: Tensor) -> Tensor:
        return self.net(image)

    def official(self, image: Tensor) -> Tensor:
        """Depth Anything's ``image2tensor`` + ``infer_image`` (DepthAnything/Depth-Anything-V2
        ``depth_anything_v2/dpt.py``; DAv1's ``run.py`` is the same but for the back-resize): shorter side to 518
        (:func:`lower_bound_size`), bicubic as cv2 ``INTER_CUBIC`` (same kernel and pixel centres, no antialias),
        ImageNet normalisation, the map resized back bilinearly."""
        h, w = image.shape[-2:]
        size = lower_bound_size(h, w, DA_INPUT_SIZE, self.multiple)
        x = F.interpolate(image, size, mode="bicubic", align_corners=False)
        out = self.raw((x - self.mean) / self.std)
        return F.interpolate(out, (h, w), mode="bilinear", align_corners=self.align_back)


def load_zoedepth(folder: Path) -> nn.Module:
    """transformers' ``ZoeDepthForDepthEstimation`` from ``folder``, strictly: its loader's report of missing,
    unexpected and mis-shaped keys (current module names) becomes one CheckpointError."""
    from transformers import ZoeDepthForDepthEstimation

    try:
        model, info = ZoeDepthForDepthEstimation.from_pretrained(
            str(folder), local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True,
            dtype=torch.float32,
        )
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}: cannot load a ZoeDepth model: {str(e).splitlines()[0]}") from e
    if info["error_msgs"]:
        raise CheckpointError(f"{folder}: cannot load a ZoeDepth model: {info['error_msgs'][0]}")
    raise_on_mismatch(
        folder, list(info["missing_keys"]), list(info["unexpected_keys"]),
        [misshaped_entry(*entry) for entry in info["mismatched_keys"]],
    )
    return model


class ZoeDepthDepth(DepthModel):
    """ZoeDepth (metric depth) through transformers, from a local HF directory. "official": the directory's
    ``ZoeDepthImageProcessor`` (reflect padding, resize, normalisation) and its ``post_process_depth_estimation``
    with the horizontal-flip average, as ZoeDepth's ``infer_pil`` defaults (isl-org/ZoeDepth
    ``zoedepth/models/depth_model.py``: ``pad_input=True, with_flip_aug=True``). "input": normalisation from
    ``preprocessor_config.json`` (else mean = std = 0.5), no padding, no flip."""

    def __init__(self, folder: str | Path | None, preprocess: str = "official") -> None:
        if folder is None or not (Path(folder) / "config.json").is_file():
            raise CheckpointError(
                f"{folder}: data.depth.model=zoedepth needs data.depth.checkpoint = a local HF ZoeDepth directory "
                "(config.json + model.safetensors; weights are never downloaded)"
            )
        folder = Path(folder)
        pre = folder / "preprocessor_config.json"
        config = json.loads(pre.read_text()) if pre.is_file() else {}
        mean, std = config.get("image_mean", (0.5,) * 3), config.get("image_std", (0.5,) * 3)
        if preprocess == "official" and not pre.is_file():
            raise CheckpointError(f"{folder}: data.depth.preprocess=official needs preprocessor_config.json")
        super().__init__("depth", ZOEDEPTH_MULTIPLE, tuple(mean), tuple(std), preprocess)
        self.net = load_zoedepth(folder).eval().requires_grad_(False)
        if preprocess == "official":
            from transformers import ZoeDepthImageProcessor

            self.processor = ZoeDepthImageProcessor.from_pretrained(str(folder), local_files_only=True)

    def raw(self, image: Tensor) -> Tensor:
        return self.net(pixel_values=image).predicted_depth[:, None]  # B,1,h,w

    def official(self, image: Tensor) -> Tensor:
        from transformers.models.zoedepth.modeling_zoedepth import ZoeDepthDepthEstimatorOutput as Output

        h, w = image.shape[-2:]
        x = self.processor(images=list(image), do_rescale=False, return_tensors="pt")["pixel_values"]
        x = x.to(image.device)  # B,3,h',w': padded, resized, normalised
        out, flipped = (Output(predicted_depth=self.raw(t)[:, 0]) for t in (x, torch.flip(x, dims=[-1])))
        maps = self.processor.post_process_depth_estimation(out, source_sizes=[(h, w)] * len(x),
                                                            outputs_flipped=flipped)
        return torch.stack([m["predicted_depth"] for m in maps])[:, None]  # B,1,H,W


def build_depth_model(name: str, checkpoint: str | Path | None = None, preprocess: str = "official") -> DepthModel:
    """``data.depth.model`` -> a frozen DepthModel in eval mode. Depth Anything without a checkpoint is
    random-init (tests); ZoeDepth needs its local directory."""
    depth_model_kind(name)  # validates the name
    if name == ZOEDEPTH:
        return ZoeDepthDepth(checkpoint, preprocess).eval()
    return DepthAnythingDepth(name, checkpoint, preprocess).eval()
