"""Image encoder: a DINOv2-style ViT (Depth Anything's ``pretrained.*``) built from timm blocks.

Parameter names follow DINOv2 / timm (``cls_token``, ``pos_embed``, ``mask_token``, ``patch_embed.proj``,
``blocks.i.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``, ``norm``), so a published
checkpoint loads strictly. The same class with ``layer_scale=False`` and no mask token is the MAE ViT layout.
Every LayerNorm has eps 1e-6, as DINOv2 (facebookresearch/dinov2 ``dinov2/models/vision_transformer.py``) and MAE
(facebookresearch/mae ``models_mae.py``) set it; it is passed explicitly because timm's default changed between
1.0.x releases. The encoder runs once per image (paper Sec. 3.1); its features are reused for every click.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, resample_abs_pos_embed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

POS_INTERP = ("dinov2", "mae", "timm")
LAYER_NORM_EPS = 1e-6


class ViTEncoder(nn.Module):
    """Plain ViT returning the (normalised) patch features of ``out_indices`` blocks as 2-D maps.

    Args:
        embed_dim, depth, num_heads: ViT shape (ViT-S/14: 384, 12, 6; ViT-B/14: 768, 12, 12).
        patch_size: 14 for DINOv2 / Depth Anything, 16 for MAE.
        pretrain_grid: side of the position-embedding grid in the checkpoint (37 = 518/14; 14 = 224/16).
        out_indices: blocks whose outputs feed the DPT heads ([2, 5, 8, 11] for DAv2 S/B).
        layer_scale: DINOv2 blocks have LayerScale (``ls1``/``ls2``); MAE blocks do not.
        pos_interp: how the position embeddings are resized to another grid (the cls entry is kept):
            "dinov2": bicubic with scale ((gh+0.1)/M, (gw+0.1)/M), no antialias (DINOv2's
            ``interpolate_pos_encoding``, facebookresearch/dinov2 ``dinov2/models/vision_transformer.py``);
            "mae": bicubic to size (gh, gw), ``align_corners=False``, no antialias (MAE's ``interpolate_pos_embed``,
            facebookresearch/mae ``util/pos_embed.py``); "timm": timm's ``resample_abs_pos_embed`` (anti-aliased;
            for encoders trained here, never for a published checkpoint).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 14,
        pretrain_grid: int = 37,
        out_indices: tuple[int, ...] = (2, 5, 8, 11),
        layer_scale: bool = True,
        pos_interp: str = "dinov2",
    ) -> None:
        super().__init__()
        if pos_interp not in POS_INTERP:
            raise ValueError(f"pos_interp must be one of {POS_INTERP}, got {pos_interp!r}")
        if max(out_indices) >= depth:
            raise ValueError(f"out_indices {out_indices} exceed depth {depth}")
        self.embed_dim, self.patch_size, self.pretrain_grid = embed_dim, patch_size, pretrain_grid
        self.out_indices, self.pos_interp = tuple(out_indices), pos_interp
        self.patch_embed = PatchEmbed(
            img_size=None, patch_size=patch_size, in_chans=3, embed_dim=embed_dim, strict_img_size=False
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pretrain_grid**2, embed_dim))
        # DINOv2 checkpoints carry a mask token (used only in its self-supervised pre-training).
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim)) if pos_interp == "dinov2" else None
        init = 1.0 if layer_scale else None
        norm = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio=4.0, qkv_bias=True, init_values=init, norm_layer=norm)
             for _ in range(depth)]
        )
        self.norm = norm(embed_dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def _pos_embed(self, gh: int, gw: int) -> Tensor:
        """Position embeddings for a gh x gw patch grid: (1, 1 + gh*gw, C)."""
        m = self.pretrain_grid
        if gh == m and gw == m:
            return self.pos_embed
        if self.pos_interp == "timm":
            return resample_abs_pos_embed(self.pos_embed, (gh, gw), num_prefix_tokens=1)
        cls_pe, patch_pe = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = patch_pe.reshape(1, m, m, -1).permute(0, 3, 1, 2).float()  # 1,C,M,M
        if self.pos_interp == "mae":
            grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False, antialias=False)
        else:
            scale = ((gh + 0.1) / m, (gw + 0.1) / m)
            grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        assert grid.shape[-2:] == (gh, gw), (grid.shape, gh, gw)
        return torch.cat([cls_pe, grid.to(patch_pe.dtype).flatten(2).transpose(1, 2)], dim=1)

    def forward(self, image: Tensor) -> list[Tensor]:
        """image: (B,3,H,W) normalised, H and W multiples of the patch size -> list of (B,C,H/p,W/p)."""
        b, _, h, w = image.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"input {h}x{w} is not a multiple of the patch size {p}")
        gh, gw = h // p, w // p
        x = self.patch_embed(image)  # B,N,C
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self._pos_embed(gh, gw)
        feats = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.out_indices:
                f = self.norm(x)[:, 1:]  # B,N,C
                feats.append(f.transpose(1, 2).reshape(b, self.embed_dim, gh, gw))
        return feats
