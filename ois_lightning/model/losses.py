"""Normalized focal loss (Sofiiuk et al. 2019), the training loss of the isegm lineage and of OIS (Sec. 4.1)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class NormalizedFocalLoss(nn.Module):
    """Focal loss whose focal weights are rescaled per sample to sum to the number of valid pixels.

    The rescaling factor is detached; the per-sample loss is averaged over valid pixels and then over the
    batch. Pixels with ``target < 0`` (ignore band, padding) do not count.
    """

    def __init__(self, *, alpha: float = 0.5, gamma: float = 2.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.alpha, self.gamma, self.eps = alpha, gamma, eps

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """logits (B,1,H,W); target (B,1,H,W) in {1, 0, -1 ignore} -> float32 scalar."""
        valid = (target >= 0).float()
        is_fg = target > 0.5
        prob = torch.sigmoid(logits.float())  # float32 under bf16 autocast too
        alpha = torch.where(is_fg, self.alpha, 1 - self.alpha) * valid
        pt = torch.where(valid > 0, 1 - (target.clamp(min=0) - prob).abs(), torch.ones_like(prob))
        beta = (1 - pt) ** self.gamma
        n_valid = valid.sum(dim=(-2, -1), keepdim=True)
        scale = (n_valid / (beta.sum(dim=(-2, -1), keepdim=True) + self.eps)).detach()
        loss = -alpha * beta * scale * torch.log((pt + self.eps).clamp(max=1.0))
        per_sample = (loss * valid).sum(dim=(-2, -1)) / (n_valid.squeeze(-1).squeeze(-1) + self.eps)
        return per_sample.mean()
