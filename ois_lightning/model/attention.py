"""Multi-head cross-attention with an additive bias, written out plainly (Cutie / SAM style).

Both OIS attentions are this layer with a different bias: order-aware attention adds ``-sigma * M``
(Eq. 3), object-aware attention adds 0 / -inf from the previous mask (Eq. 4-5).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class CrossAttention(nn.Module):
    """softmax(Q K^T / sqrt(d) + bias) V over ``heads`` heads; queries and keys/values both ``dim`` wide."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)  # B,h,N,d

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """q: (B,N,C), k/v: (B,L,C), bias: (B,N,L) added to every head's logits -> (B,N,C) [, (B,h,N,L)]."""
        qh, kh, vh = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        logits = qh @ kh.transpose(-2, -1) / math.sqrt(qh.shape[-1])  # B,h,N,L
        if bias is not None:
            logits = logits + bias.unsqueeze(1)
        weights = logits.softmax(dim=-1)
        out = (weights @ vh).transpose(1, 2).flatten(2)  # B,N,C
        out = self.out_proj(out)
        return (out, weights) if return_weights else out


def allowed_to_bias(allowed: Tensor) -> Tensor:
    """Bool (B,N,L) "may attend" -> additive bias 0 / -inf: the mask H of Eq. 5 (object-aware attention,
    Sec. 3.3). A row with nothing allowed is left unmasked (as Mask2Former does), so a query never sees an
    empty softmax."""
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    zero = torch.zeros((), dtype=torch.float32, device=allowed.device)
    return torch.where(allowed, zero, torch.tensor(float("-inf"), device=allowed.device))


class ResidualCrossAttention(nn.Module):
    """LN(S + CrossAttention(S, K, V, bias)): the form both OIS attentions share (Eq. 3 and Eq. 4)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = CrossAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def attend(
        self, tokens: Tensor, keys: Tensor, values: Tensor, bias: Tensor | None, return_weights: bool
    ) -> Tensor | tuple[Tensor, Tensor]:
        out, weights = self.attn(tokens, keys, values, bias, return_weights=True)
        out = self.norm(tokens + out)
        return (out, weights) if return_weights else out
