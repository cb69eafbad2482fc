"""Prompt fusion (paper Sec. 3.2-3.4): three blocks of object-aware + order-aware attention with an FFN,
then the updated click tokens write back into the image features (our choice, docs/architecture.md)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .attention import CrossAttention
from .objectness import ObjectAwareAttention
from .order import OrderAwareAttention


class FusionBlock(nn.Module):
    """Object-aware attention, order-aware attention (either order, Table 7), then LN(S + FFN(S)).

    One block of object- and order-level understanding (Sec. 3.2-3.3); Sec. 4.1: three such blocks, FFN a
    2-layer MLP, every attention followed by a LayerNorm.
    """

    def __init__(self, *, dim: int, heads: int, ffn_dim: int, order: bool, sigma_init: float, order_first: bool
                 ) -> None:
        super().__init__()
        self.object_attn = ObjectAwareAttention(dim, heads)
        self.order_attn = OrderAwareAttention(dim, heads, order=order, sigma_init=sigma_init)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.order_first = order_first

    def forward(
        self, tokens: Tensor, keys: Tensor, values: Tensor, order: Tensor | None, allowed: Tensor | None
    ) -> Tensor:
        """tokens (B,N,C), keys/values (B,L,C), order (B,N,L) or None, allowed (B,N,L) or None -> (B,N,C)."""
        if self.order_first:
            tokens = self.order_attn(tokens, keys, values, order)
            tokens = self.object_attn(tokens, keys, values, allowed)
        else:
            tokens = self.object_attn(tokens, keys, values, allowed)
            tokens = self.order_attn(tokens, keys, values, order)
        return self.norm(tokens + self.ffn(tokens))


class TokenToImage(nn.Module):
    """Image-to-token cross-attention (as in SAM's two-way transformer): every feature location reads the
    updated click tokens. Empty slots stay visible as keys, as in SAM: their learned not-a-point embedding
    is what lets a location attend to "no click here".

    With ``order``, the logits carry Eq. 3's order bias transposed, ``-sigma * M^T``: a
    location whose depth is far from a click's order reads little of that click's token (our write-back,
    docs/architecture.md); sigma is learnable and positive like Eq. 3's. Returns the update (B,L,C)."""

    def __init__(self, dim: int, heads: int, *, order: bool = True, sigma_init: float = 5.0) -> None:
        super().__init__()
        self.attn = CrossAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma_init))) if order else None

    def forward(
        self, queries: Tensor, query_pe: Tensor, tokens: Tensor, token_pe: Tensor, order: Tensor | None
    ) -> Tensor:
        """queries (B,L,C), query_pe (1,L,C), tokens/token_pe (B,N,C), order (B,N,L) or None -> (B,L,C)."""
        bias = None
        if self.log_sigma is not None and order is not None:
            bias = -self.log_sigma.exp() * order.transpose(1, 2)  # B,L,N
        return self.norm(self.attn(queries + query_pe, tokens + token_pe, tokens, bias))


class SparseFusion(nn.Module):
    """The sparse path: project features to C, run the fusion blocks on the click tokens, write back.

    Sparse fusion of Sec. 3.4 (order-aware attention Eq. 3, object-aware attention Eq. 4-5).

    Args:
        feat_dim: encoder width D. dim: token width C (128). blocks: 3 in the paper (Sec. 4.1).
        order: False makes order-aware attention plain cross-attention (depth unused); sigma_init: its
            initial sigma (Eq. 3), learnable.
        order_write_back: with order on, the write-back carries the transposed order bias (our extension,
            ``model.order.write_back``); False keeps order in the fusion blocks only (Eq. 3 as written).
    """

    def __init__(
        self, *, feat_dim: int, dim: int, heads: int, ffn_dim: int, blocks: int, order: bool, sigma_init: float,
        order_first: bool, order_write_back: bool = True,
    ) -> None:
        super().__init__()
        self.feat_proj = nn.Linear(feat_dim, dim)
        self.blocks = nn.ModuleList([
            FusionBlock(dim=dim, heads=heads, ffn_dim=ffn_dim, order=order, sigma_init=sigma_init,
                        order_first=order_first) for _ in range(blocks)
        ])
        self.to_image = TokenToImage(dim, heads, order=order and order_write_back, sigma_init=sigma_init)
        self.out_proj = nn.Linear(dim, feat_dim)

    def forward(
        self,
        feat: Tensor,
        feat_pe: Tensor,
        tokens: Tensor,
        token_pe: Tensor,
        order: Tensor | None,
        allowed: Tensor | None,
    ) -> Tensor:
        """feat (B,D,h,w) prompt-aware features; feat_pe (h*w,C); tokens/token_pe (B,N,C);
        order/allowed (B,N,h*w) or None -> feature update (B,D,h,w)."""
        b, _, h, w = feat.shape
        x = self.feat_proj(feat.flatten(2).transpose(1, 2))  # B,L,C
        pe = feat_pe[None]  # 1,L,C
        keys = x + pe
        for blk in self.blocks:
            tokens = blk(tokens, keys, x, order, allowed)
        update = self.out_proj(self.to_image(x, pe, tokens, token_pe, order))  # B,L,D
        return update.transpose(1, 2).reshape(b, -1, h, w)
