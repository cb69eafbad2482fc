"""Backbone registry: ViT encoder + DPT head shapes of Depth Anything V2 / V1, MAE and tiny test shapes
(paper Sec. 4.1, Tables 6, 10, 11)."""
from __future__ import annotations

from dataclasses import dataclass


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


ZOEDEPTH = "zoedepth"  # the one depth model of Table 6 that is not a backbone of SPECS


def depth_model_names() -> list[str]:
    """Valid ``data.depth.model`` values: Depth Anything backbones with a depth head (including "tiny", the CPU
    miniature's, e.g. a file from ``ois pretrain depth``; docs/pretraining.md), and ZoeDepth."""
    return [name for name, spec in SPECS.items() if spec.has_depth_head] + [ZOEDEPTH]


def depth_model_kind(name: str) -> str:
    """The convention of ``name``'s output: "depth" (metric, ZoeDepth) or "disparity" (any backbone of SPECS
    with a Depth Anything head)."""
    if name == ZOEDEPTH:
        return "depth"
    if name in SPECS and SPECS[name].has_depth_head:
        return "disparity"
    raise ValueError(f"unknown depth model {name!r}; known: {', '.join(depth_model_names())}")


def get_spec(name: str) -> BackboneSpec:
    if name not in SPECS:
        raise KeyError(f"unknown backbone '{name}'; known: {', '.join(SPECS)}")
    return SPECS[name]
