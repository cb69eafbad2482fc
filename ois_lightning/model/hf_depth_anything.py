"""Depth Anything model directories (``config.json`` + weights) -> the official layout.

Two layouts exist. Hugging Face ``DepthAnythingForDepthEstimation`` exports (DAv1 / DAv2 ``*-hf``, ``config.json``
with a ``model_type``) are converted as below. Depth Anything V1's own hub directories
(``LiheYoung/depth_anything_vit{s,b,l}14``) hold the ``PyTorchModelHubMixin`` save of its ``DepthAnything`` class
(LiheYoung/Depth-Anything ``depth_anything/dpt.py``): ``config.json`` is the constructor's arguments (``encoder``,
``features``, ``out_channels``, ``use_bn``, ``use_clstoken``) and ``pytorch_model.bin`` the state dict, already in
the official layout; that class feeds the head the last four blocks (``get_intermediate_layers(x, 4)``).

The HF port stores the network under other names: a DINOv2 backbone with separate query/key/value
projections (``backbone.*``), a "neck" (reassemble + fusion stages, fusion listed deepest first) and a three-conv
"head". :func:`spec_from_config` reads ``config.json`` (through transformers, offline) into a
:class:`BackboneSpec` and :func:`convert_state_dict` renames / fuses the weights into ``pretrained.*`` +
``depth_head.*``; :func:`read_depth_anything_dir` reads either layout.

One numerical difference stays: at input sizes other than the config's ``image_size`` the HF port resizes the
position embeddings to the target size, while the official DINOv2 code (and our encoder) scales by
((gh + 0.1) / M, (gw + 0.1) / M); converted weights therefore reproduce the official model, not the HF one.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .specs import BackboneSpec
from .checkpoints import CheckpointError, read_hf_weights

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


DAV1_ENCODERS = {"vits": (384, 12, 6), "vitb": (768, 12, 12), "vitl": (1024, 24, 16)}  # embed_dim, depth, heads


def _dav1_hub_diff(config: dict, spec: BackboneSpec) -> list[str]:
    """Differences between a DAv1 hub ``config.json`` and ``spec`` (empty: the same network)."""
    if config.get("encoder") not in DAV1_ENCODERS:
        return [f"encoder {config.get('encoder')!r} (expected one of {', '.join(DAV1_ENCODERS)})"]
    dim, depth, heads = DAV1_ENCODERS[config["encoder"]]
    found = {
        "embed_dim": dim, "depth": depth, "num_heads": heads, "out_indices": tuple(range(depth - 4, depth)),
        "head_features": config.get("features"), "head_out_channels": tuple(config.get("out_channels", ())),
    }
    diff = [f"{k} {v} (expected {getattr(spec, k)})" for k, v in found.items() if v != getattr(spec, k)]
    return diff + [f"{k}=true (not supported)" for k in ("use_bn", "use_clstoken") if config.get(k)]


def read_depth_anything_dir(folder: str | Path, spec: BackboneSpec, label: str) -> dict[str, Tensor]:
    """The official-layout state dict of a Depth Anything directory (either layout), after checking that its
    ``config.json`` describes ``spec`` (``label`` names it in the error)."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a model directory (expected config.json and the weights)")
    config = json.loads(path.read_text())
    if "model_type" in config:
        found = spec_from_config(folder)
        diff = [
            f"{f.name} {getattr(found, f.name)} (expected {getattr(spec, f.name)})"
            for f in dataclasses.fields(spec)
            if getattr(found, f.name) != getattr(spec, f.name)
        ]
    elif "encoder" in config:
        diff = _dav1_hub_diff(config, spec)
    else:
        raise CheckpointError(f"{path}: neither a transformers config (model_type) nor Depth Anything V1's (encoder)")
    if diff:
        raise CheckpointError(f"{path}: not the network of {label}: " + "; ".join(diff))
    state = read_hf_weights(folder)
    return convert_state_dict(state, folder) if "model_type" in config else state
