"""Scale-and-shift-invariant depth: the training loss and the aligned evaluation metrics.

Relative depth is known only up to an affine map, so prediction and target are compared after removing it:
the loss normalises both by median and mean absolute deviation (Depth Anything, Yang et al. 2024, Eq. 1-2,
after MiDaS, Ranftl et al. 2020); the metrics align the prediction to the ground truth by per-image least-squares
scale and shift (MiDaS Sec. 5, the protocol of Depth Anything's zero-shot tables), then take AbsRel and delta<1.25.
"""
from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6
# Layered scenes' disparity is min-max normalised to 0..1, so the far background reaches 0; AbsRel divides by the
# ground truth, so pixels of disparity below this (the farthest part of the background plane) are left out.
MIN_DISPARITY = 0.05
DELTA = 1.25


def median_mad(d: Tensor) -> Tensor:
    """(B,1,H,W) -> the same map minus its per-image median, divided by its mean absolute deviation."""
    flat = d.flatten(1)  # B,HW
    t = flat.median(dim=1, keepdim=True).values
    s = (flat - t).abs().mean(dim=1, keepdim=True).clamp_min(EPS)
    return ((flat - t) / s).view_as(d)


def ssi_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Depth Anything's affine-invariant loss: mean |median_mad(pred) - median_mad(target)| over all pixels."""
    return (median_mad(pred) - median_mad(target)).abs().mean()


def align_scale_shift(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """``s * pred + t`` with per-image (s, t) minimising sum over ``valid`` of (s * pred + t - target)^2
    (closed form of the 2x2 normal equations; a constant prediction gets s = 0, t = mean target). All B,1,H,W."""
    p, g, m = (x.flatten(1).to(pred.dtype) for x in (pred, target, valid))  # B,HW
    n, sp, sg = m.sum(1), (m * p).sum(1), (m * g).sum(1)
    spp, spg = (m * p * p).sum(1), (m * p * g).sum(1)
    det = n * spp - sp * sp
    flat = det.abs() <= EPS * n.clamp_min(1) ** 2
    det = torch.where(flat, torch.ones_like(det), det)
    s = torch.where(flat, torch.zeros_like(det), (n * spg - sp * sg) / det)
    t = torch.where(flat, sg / n.clamp_min(1), (spp * sg - sp * spg) / det)
    return s.view(-1, 1, 1, 1) * pred + t.view(-1, 1, 1, 1)


def depth_metrics(pred: Tensor, gt: Tensor) -> dict[str, float]:
    """AbsRel and delta<1.25 of (B,1,H,W) predictions against ground-truth disparity, after per-image
    least-squares scale-and-shift alignment on the pixels with gt >= MIN_DISPARITY; means over the images."""
    valid = gt >= MIN_DISPARITY
    aligned = align_scale_shift(pred.double(), gt.double(), valid).clamp_min(EPS)
    g = gt.double().clamp_min(EPS)
    count = valid.flatten(1).sum(1).clamp_min(1)
    absrel = ((aligned - g).abs() / g * valid).flatten(1).sum(1) / count
    ratio = torch.maximum(aligned / g, g / aligned)
    delta1 = ((ratio < DELTA) & valid).flatten(1).sum(1) / count
    return {"absrel": absrel.mean().item(), "delta1": delta1.mean().item()}
