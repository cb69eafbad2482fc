"""Backbone registry: ViT encoder + DPT head shapes of Depth Anything V2 / V1, MAE and tiny test shapes, and
:func:`build`, which makes the encoder (+ depth head) under the published parameter names and loads a checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoints import load_strict, read_state_dict
from .dpt import DPTHead
from .vit import ViTEncoder


@dataclass(frozen=True)
class BackboneSpec:
    """Shape of an encoder and of its DPT heads."""

    embed_dim: int
    depth: int
    num_heads: int
    out_indices: tuple[int, ...]
    head_features: int
    head_out_channels: tuple[int, int, int, int]
    patch_size: int = 14
    pretrain_grid: int = 37  # 518 / 14
    layer_scale: bool = True
    pos_interp: str = "dinov2"
    has_depth_head: bool = True  # DAv1/DAv2 ship a DPT depth head; MAE does not
    # Keys of the pre-training checkpoint that are not part of the encoder and are dropped when loading
    # (MAE: its decoder and the decoder's mask token).
    drop_keys: tuple[str, ...] = ()


_S = dict(embed_dim=384, depth=12, num_heads=6, head_features=64, head_out_channels=(48, 96, 192, 384))
_B = dict(embed_dim=768, depth=12, num_heads=12, head_features=128, head_out_channels=(96, 192, 384, 768))
_L = dict(embed_dim=1024, depth=24, num_heads=16, head_features=256, head_out_channels=(256, 512, 1024, 1024))
_T = dict(embed_dim=64, depth=4, num_heads=4, out_indices=(0, 1, 2, 3), head_features=32,
          head_out_channels=(16, 32, 64, 64))  # the CPU miniature's width (tests, demo, `ois pretrain`)
# MAE's ViT/16 (facebookresearch/mae): pre-trained at 224 = 14 x 16, no layer scale, no depth head
_MAE = dict(patch_size=16, pretrain_grid=14, layer_scale=False, pos_interp="mae", has_depth_head=False,
            drop_keys=("decoder_", "mask_token"))

SPECS: dict[str, BackboneSpec] = {
    "tiny": BackboneSpec(pretrain_grid=16, **_T),
    "mae-tiny": BackboneSpec(**_MAE, **_T),  # the miniature's MAE encoder (`ois pretrain mae`, Tables 10-11)
    "dav2-vits": BackboneSpec(out_indices=(2, 5, 8, 11), **_S),
    "dav2-vitb": BackboneSpec(out_indices=(2, 5, 8, 11), **_B),
    "dav2-vitl": BackboneSpec(out_indices=(4, 11, 17, 23), **_L),
    "dav1-vitb": BackboneSpec(out_indices=(8, 9, 10, 11), **_B),  # DAv1 feeds the head the last four blocks
    "mae-vitb": BackboneSpec(out_indices=(2, 5, 8, 11), **_MAE, **_B),
}


def get_spec(name: str) -> BackboneSpec:
    if name not in SPECS:
        raise KeyError(f"unknown backbone '{name}'; known: {', '.join(SPECS)}")
    return SPECS[name]


def build_encoder(spec: BackboneSpec) -> ViTEncoder:
    return ViTEncoder(
        spec.embed_dim, spec.depth, spec.num_heads, spec.patch_size, spec.pretrain_grid,
        spec.out_indices, spec.layer_scale, spec.pos_interp,
    )


def build_head(spec: BackboneSpec, final_relu: bool, deepest_skip: bool, full_resolution: bool = True) -> DPTHead:
    return DPTHead(spec.embed_dim, spec.head_features, spec.head_out_channels, final_relu, deepest_skip,
                   full_resolution)


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
