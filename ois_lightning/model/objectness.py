"""Object-level understanding (paper Sec. 3.3): object-aware attention (Eq. 4-5)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .attention import ResidualCrossAttention, allowed_to_bias
from .prompts import NEG, POS


def object_mask(prev_mask: Tensor, labels: Tensor, out_size: tuple[int, int]) -> Tensor:
    """Mask H of Eq. 5 as "may attend" booleans (B,N,h*w).

    Positive slots may attend to the previous mask's foreground H^f, negative slots to its background, empty
    slots everywhere. ``prev_mask`` (B,1,H,W) in {0,1} is area-pooled to the feature grid and thresholded at
    0.5 (as Cutie does).
    """
    fg = (F.interpolate(prev_mask.float(), size=out_size, mode="area") > 0.5).flatten(1)[:, None]  # B,1,L
    pos, neg = (labels == POS)[..., None], (labels == NEG)[..., None]  # B,N,1
    return (pos & fg) | (neg & ~fg) | ~(pos | neg)


class ObjectAwareAttention(ResidualCrossAttention):
    """Eq. 4: S' = LN(softmax(Q K^T + H) V + S), H = 0 where allowed and -inf elsewhere (Eq. 5).

    ``allowed=None`` (first round, no previous mask, or the "w/o object" ablation) is standard cross-attention.
    """

    def forward(
        self, tokens: Tensor, keys: Tensor, values: Tensor, allowed: Tensor | None, return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """tokens (B,N,C); keys/values (B,L,C); allowed (B,N,L) bool or None -> (B,N,C) [, (B,h,N,L)]."""
        bias = allowed_to_bias(allowed) if allowed is not None else None
        return self.attend(tokens, keys, values, bias, return_weights)
