"""The published backbone networks: :func:`build` makes the encoder (+ depth head) of a registered shape
(:mod:`ois_lightning.model.specs`) under the published parameter names and loads a checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoints import load_strict, read_state_dict
from .dpt import DPTHead
from .specs import BackboneSpec, get_spec
from .vit import ViTEncoder


def build_encoder(spec: BackboneSpec) -> ViTEncoder:
    return ViTEncoder(
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        patch_size=spec.patch_size,
        pretrain_grid=spec.pretrain_grid,
        out_indices=spec.out_indices,
        layer_scale=spec.layer_scale,
        pos_interp=spec.pos_interp,
    )


def build_head(spec: BackboneSpec, final_relu: bool, deepest_skip: bool, full_resolution: bool = True) -> DPTHead:
    return DPTHead(in_dim=spec.embed_dim, features=spec.head_features, out_channels=spec.head_out_channels,
                   final_relu=final_relu, deepest_skip=deepest_skip, full_resolution=full_resolution)


class Backbone(nn.Module):
    """The published network: ViT encoder ``pretrained.*`` and, for Depth Anything, its DPT depth head
    ``depth_head.*`` (final ReLU, ``refinenet4.resConfUnit1`` kept), so an official file loads strictly."""

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec
        self.pretrained = build_encoder(spec)
        self.depth_head = build_head(spec, final_relu=True, deepest_skip=True) if spec.has_depth_head else None

    def forward(self, image: Tensor) -> Tensor:
        """image (B,3,H,W) ImageNet-normalised, sides multiples of the patch -> relative disparity (B,1,H,W)."""
        if self.depth_head is None:
            raise ValueError("this backbone has no depth head (MAE): depth must come from data.depth")
        return torch.relu(self.depth_head(self.pretrained(image), (image.shape[-2], image.shape[-1])))


def _encoder_only(state: dict[str, Tensor], spec: BackboneSpec) -> dict[str, Tensor]:
    """An encoder-only file (timm / MAE layout, no ``pretrained.`` prefix) -> our names, pre-training-only keys
    (``spec.drop_keys``) removed."""
    return {f"pretrained.{k}": v for k, v in state.items() if not k.startswith(spec.drop_keys)}


def build(name: str | BackboneSpec, checkpoint: str | Path | None = None) -> Backbone:
    """Backbone ``name`` (a key of SPECS, or a spec), random-init or loaded strictly from ``checkpoint``.

    ``checkpoint``: an official Depth Anything file (``pretrained.*`` + ``depth_head.*``), an encoder-only file
    (timm / official MAE layout; MAE decoder keys dropped) or a Depth Anything directory (HF export, or DAv1's own
    hub directory), whose ``config.json`` must describe the same network as ``name``.
    """
    spec = get_spec(name) if isinstance(name, str) else name
    backbone = Backbone(spec)
    if checkpoint is None:
        return backbone
    path = Path(checkpoint)
    if path.is_dir():
        from .hf_depth_anything import read_depth_anything_dir

        state = read_depth_anything_dir(path, spec, repr(name) if isinstance(name, str) else "the given spec")
    else:
        state = read_state_dict(path)
        if not any(k.startswith("pretrained.") for k in state):
            state = _encoder_only(state, spec)
    load_strict(backbone, state, path)
    return backbone
