"""Dense prompt fusion, the efficiency baseline of paper Table 3 (``model.fusion=dense_self_attention``).

SegNext (Liu et al. 2024a) fuses prompts densely: the click maps and the previous mask are embedded as maps,
added to the image features, and self-attention blocks then run over *all* h*w feature locations (its
released ViT-B model uses two blocks, "SAx2"). OIS Sec. 3.4 removes exactly this self-attention and lets ~48
sparse tokens cross-attend to the features instead. Same encoder, same dense click map (the caller adds
:class:`~ois_lightning.model.prompts.DenseClickEncoder`'s output first) and same DPT decoder as OIS, so the
two fusions are compared on equal terms (``ois bench``, docs/benchmarks.md).
"""
from __future__ import annotations

from timm.models.vision_transformer import Block
from torch import Tensor, nn

SEGNEXT_BLOCKS = 2  # SegNext ViT-B "SAx2"


class DenseSelfAttentionFusion(nn.Module):
    """Previous-mask embedding + ``blocks`` ViT self-attention blocks at the encoder width over the h*w grid.

    Returns the feature update (B,D,h,w) that the model adds to every encoder level, like
    :class:`~ois_lightning.model.fusion.SparseFusion` does. Cost per click is quadratic in h*w (5476 locations
    at 1036 input), against linear in h*w for OIS's token attention.

    Args:
        dim: encoder width D. heads: attention heads (the encoder's). patch_size: the mask embedding is one
        conv with kernel = stride = patch, as the dense click encoder. blocks: 2 (SegNext SAx2).
    """

    def __init__(self, *, dim: int, heads: int, patch_size: int, blocks: int = SEGNEXT_BLOCKS) -> None:
        super().__init__()
        self.mask_embed = nn.Conv2d(1, dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(blocks)])

    def forward(self, feat: Tensor, prev_mask: Tensor | None) -> Tensor:
        """feat (B,D,h,w) features with the dense click map added; prev_mask (B,1,H,W) in {0,1}, or None in
        round 1 (an empty mask) -> update (B,D,h,w)."""
        b, _, h, w = feat.shape
        if prev_mask is None:  # an empty mask embeds to the conv bias alone
            mask = self.mask_embed.bias.view(1, -1, 1, 1)
        else:
            mask = self.mask_embed(prev_mask.to(feat.dtype))  # B,D,h,w
        x = feat + mask
        fused = self.blocks(x.flatten(2).transpose(1, 2))  # B,L,D
        return fused.transpose(1, 2).reshape(b, -1, h, w) - feat  # the deepest level becomes SegNext's map
