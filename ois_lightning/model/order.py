"""Order-level understanding (paper Sec. 3.2): order maps (Eq. 1-2) and order-aware attention (Eq. 3)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import ResidualCrossAttention
from .prompts import NEG, POS

ORDER_MODES = ("pos+neg", "pos", "neg")


def normalize_depth(depth: Tensor, kind: str = "disparity", eps: float = 1e-6) -> Tensor:
    """(B,1,H,W) depth of either convention -> disparity-like map in [0, 1] per image (1 = nearest).

    Depth Anything predicts relative disparity (larger = closer); metric depth (ZoeDepth, larger = farther)
    is inverted first. Min-max normalisation makes the order maps lie in [0, 1] as in Fig. 3.
    """
    if kind == "depth":
        depth = 1.0 / depth.clamp(min=eps)
    elif kind != "disparity":
        raise ValueError(f"depth kind must be 'disparity' or 'depth', got {kind!r}")
    flat = depth.flatten(1)
    lo, hi = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    return (depth - lo) / (hi - lo).clamp(min=eps)


def sample_at_clicks(depth: Tensor, coords: Tensor) -> Tensor:
    """Depth value at each click's pixel, R_p of Eq. 1-2 (Sec. 3.2): depth (B,1,H,W), coords (B,N,2) (y, x)
    -> (B,N)."""
    h, w = depth.shape[-2:]
    y = coords[..., 0].round().long().clamp(0, h - 1)
    x = coords[..., 1].round().long().clamp(0, w - 1)
    return depth.flatten(1).gather(1, y * w + x)


def order_maps(
    depth: Tensor, coords: Tensor, labels: Tensor, mode: str = "pos+neg", out_size: tuple[int, int] | None = None
) -> Tensor:
    """Order mask M of Eq. 3, one map per click slot: (B,N,h,w).

    Eq. 1: every positive click shares M^p = |R - mean of R at the positive clicks|.
    Eq. 2: each negative click i has its own M^n_i = |R - R at click i|.
    Slots without a click, and clicks whose type ``mode`` excludes (Table 9), get an all-zero map, i.e. no
    order bias. ``depth`` (B,1,H,W) is the normalised depth R; click depths are read at full resolution and
    the maps are computed on R average-pooled to ``out_size`` (the feature grid) when given.
    """
    if mode not in ORDER_MODES:
        raise ValueError(f"order mode must be one of {ORDER_MODES}, got {mode!r}")
    values = sample_at_clicks(depth, coords)  # B,N
    is_pos, is_neg = labels == POS, labels == NEG
    pos_mean = (values * is_pos).sum(1) / is_pos.sum(1).clamp(min=1)  # B
    ref = torch.where(is_pos, pos_mean[:, None], values)  # B,N
    grid = F.adaptive_avg_pool2d(depth, out_size) if out_size is not None else depth  # B,1,h,w
    maps = (grid - ref[..., None, None]).abs()  # B,N,h,w
    use = {"pos+neg": is_pos | is_neg, "pos": is_pos, "neg": is_neg}[mode]
    return maps * use[..., None, None]


class OrderAwareAttention(ResidualCrossAttention):
    """Eq. 3: S' = LN(softmax(Q K^T - sigma * M) V + S), sigma > 0 learnable (kept as log sigma).

    With ``order=False`` the layer is plain cross-attention (the "w/o order" ablation, Table 4): no sigma
    parameter exists and the order maps are not used.
    """

    def __init__(self, dim: int, heads: int, *, order: bool = True, sigma_init: float = 5.0) -> None:
        super().__init__(dim, heads)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma_init))) if order else None

    @property
    def sigma(self) -> Tensor | None:
        return self.log_sigma.exp() if self.log_sigma is not None else None

    def forward(
        self, tokens: Tensor, keys: Tensor, values: Tensor, order: Tensor | None, return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """tokens (B,N,C); keys/values (B,L,C); order (B,N,L) in [0,1] or None -> (B,N,C) [, (B,h,N,L)]."""
        bias = -self.sigma * order if (self.log_sigma is not None and order is not None) else None
        return self.attend(tokens, keys, values, bias, return_weights)
