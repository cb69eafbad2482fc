"""Hugging Face ``DepthAnythingForDepthEstimation`` exports (DAv1 / DAv2 ``*-hf``) -> the official layout.

The HF port stores the same network under other names: a DINOv2 backbone with separate query/key/value
projections (``backbone.*``), a "neck" (reassemble + fusion stages, fusion listed deepest first) and a three-conv
"head". :func:`read_hf_depth_anything` reads ``config.json`` (through transformers, offline) into a
:class:`BackboneSpec` and renames / fuses the weights into ``pretrained.*`` + ``depth_head.*``.

One numerical difference stays: at input sizes other than the config's ``image_size`` the HF port resizes the
position embeddings to the target size, while the official DINOv2 code (and our encoder) scales by
((gh + 0.1) / M, (gw + 0.1) / M); converted weights therefore reproduce the official model, not the HF one.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .backbones import BackboneSpec
from .checkpoints import CheckpointError

_BLOCK = r"backbone\.encoder\.layer\.(\d+)\."
_FUSION = r"neck\.fusion_stage\.layers\.(\d)\."


def _level(j: str) -> int:
    """HF fusion layer j works on the (j+1)-th deepest level, i.e. the official ``refinenet{4-j}``."""
    return 4 - int(j)


# (HF key pattern, official key: a regex template or a function of the match)
RULES: list[tuple[str, str | Callable[[re.Match], str]]] = [
    (r"backbone\.embeddings\.cls_token", "pretrained.cls_token"),
    (r"backbone\.embeddings\.mask_token", "pretrained.mask_token"),
    (r"backbone\.embeddings\.position_embeddings", "pretrained.pos_embed"),
    (r"backbone\.embeddings\.patch_embeddings\.projection\.(weight|bias)", r"pretrained.patch_embed.proj.\1"),
    (_BLOCK + r"(norm1|norm2)\.(weight|bias)", r"pretrained.blocks.\1.\2.\3"),
    (_BLOCK + r"attention\.output\.dense\.(weight|bias)", r"pretrained.blocks.\1.attn.proj.\2"),
    (_BLOCK + r"layer_scale(1|2)\.lambda1", r"pretrained.blocks.\1.ls\2.gamma"),
    (_BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", r"pretrained.blocks.\1.mlp.\2.\3"),
    (r"backbone\.layernorm\.(weight|bias)", r"pretrained.norm.\1"),
    (r"neck\.reassemble_stage\.layers\.(\d)\.projection\.(weight|bias)", r"depth_head.projects.\1.\2"),
    (r"neck\.reassemble_stage\.layers\.(\d)\.resize\.(weight|bias)", r"depth_head.resize_layers.\1.\2"),
    (r"neck\.convs\.(\d)\.weight", lambda m: f"depth_head.scratch.layer{int(m[1]) + 1}_rn.weight"),
    (_FUSION + r"projection\.(weight|bias)", lambda m: f"depth_head.scratch.refinenet{_level(m[1])}.out_conv.{m[2]}"),
    (
        _FUSION + r"residual_layer(1|2)\.convolution(1|2)\.(weight|bias)",
        lambda m: f"depth_head.scratch.refinenet{_level(m[1])}.resConfUnit{m[2]}.conv{m[3]}.{m[4]}",
    ),
    (r"head\.conv1\.(weight|bias)", r"depth_head.scratch.output_conv1.\1"),
    (r"head\.conv2\.(weight|bias)", r"depth_head.scratch.output_conv2.0.\1"),
    (r"head\.conv3\.(weight|bias)", r"depth_head.scratch.output_conv2.2.\1"),
]
_QKV = re.compile(_BLOCK + r"attention\.attention\.(query|key|value)\.(weight|bias)")


def convert_state_dict(hf: dict[str, Tensor], source: str | Path) -> dict[str, Tensor]:
    """HF ``DepthAnythingForDepthEstimation`` weights -> official Depth Anything keys (q, k, v fused to qkv)."""
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    unknown = []
    for key, value in hf.items():
        if m := _QKV.fullmatch(key):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
            continue
        for pattern, target in RULES:
            if m := re.fullmatch(pattern, key):
                out[m.expand(target) if isinstance(target, str) else target(m)] = value
                break
        else:
            unknown.append(key)
    for (block, kind), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            unknown.append(f"backbone.encoder.layer.{block}.attention.attention.*.{kind} (only {sorted(parts)})")
            continue
        out[f"pretrained.blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    if unknown:
        shown = ", ".join(sorted(unknown)[:8])
        raise CheckpointError(
            f"{source}: keys not in the Depth Anything HF layout: [{shown}] ({len(unknown)} in total)"
        )
    return out


def _require(ok: bool, source: Path, what: str) -> None:
    if not ok:
        raise CheckpointError(f"{source / 'config.json'}: unsupported Depth Anything config: {what}")


def spec_from_config(folder: str | Path) -> BackboneSpec:
    """The BackboneSpec of an HF Depth Anything export, read offline with transformers' own config class."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: not an HF model directory (expected config.json and model.safetensors)")
    from transformers import DepthAnythingConfig

    try:
        cfg = DepthAnythingConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: cannot read a DepthAnythingConfig: {e}") from e
    bb = cfg.backbone_config
    _require(cfg.model_type == "depth_anything", folder, f"model_type {cfg.model_type!r} (expected 'depth_anything')")
    _require(bb.model_type == "dinov2", folder, f"backbone {bb.model_type!r} (expected 'dinov2')")
    _require(not bb.use_swiglu_ffn and bb.mlp_ratio == 4 and bb.qkv_bias and bb.hidden_act == "gelu", folder,
             "the backbone must be a plain DINOv2 ViT (GELU MLP of ratio 4, qkv bias, no SwiGLU)")
    _require(bb.apply_layernorm and abs(bb.layer_norm_eps - 1e-6) < 1e-12, folder,
             "features must be layer-normalised with eps 1e-6")
    _require(list(cfg.reassemble_factors) == [4, 2, 1, 0.5], folder,
             f"reassemble_factors {list(cfg.reassemble_factors)} (expected [4, 2, 1, 0.5])")
    _require(cfg.head_hidden_size == 32 and cfg.head_in_index == -1, folder,
             "head_hidden_size must be 32 and head_in_index -1")
    _require(cfg.depth_estimation_type == "relative" and cfg.max_depth == 1, folder,
             f"depth_estimation_type {cfg.depth_estimation_type!r} with max_depth {cfg.max_depth} "
             "(expected the relative model, max_depth 1)")
    _require(cfg.reassemble_hidden_size == bb.hidden_size and cfg.patch_size == bb.patch_size, folder,
             "reassemble_hidden_size / patch_size differ from the backbone's")
    _require(bb.image_size % bb.patch_size == 0 and len(bb.out_indices) == 4, folder,
             "image_size must be a multiple of patch_size and out_indices must name four stages")
    return BackboneSpec(
        embed_dim=bb.hidden_size,
        depth=bb.num_hidden_layers,
        num_heads=bb.num_attention_heads,
        out_indices=tuple(i - 1 for i in bb.out_indices),  # HF stage i is the output of block i-1
        head_features=cfg.fusion_hidden_size,
        head_out_channels=tuple(cfg.neck_hidden_sizes),
        patch_size=bb.patch_size,
        pretrain_grid=bb.image_size // bb.patch_size,
    )


def _weights(folder: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single), device="cpu")
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(folder / shard), device="cpu").items()}
    raise CheckpointError(f"{folder}: no model.safetensors (or model.safetensors.index.json) in the HF directory")


def read_hf_depth_anything(folder: str | Path) -> tuple[BackboneSpec, dict[str, Tensor]]:
    """(spec, official-layout state dict) of an HF Depth Anything directory."""
    folder = Path(folder)
    spec = spec_from_config(folder)
    return spec, convert_state_dict(_weights(folder), folder)
