"""DPT head (Ranftl et al. 2021) in Depth Anything V2's layout (``depth_head.*``).

Used twice (paper Sec. 4.1): a frozen copy predicts the relative depth map, a trainable copy (same shape,
initialised from the same weights) predicts the mask logits from the prompt-enhanced features.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ResidualConvUnit(nn.Module):
    """relu -> conv3x3 -> relu -> conv3x3, plus the input."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """Adds a refined skip input (if any), refines, upsamples (x2 or to ``size``), projects 1x1."""

    def __init__(self, features: int, with_skip: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features) if with_skip else None
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        if skip is not None:
            assert self.resConfUnit1 is not None, "this fusion block was built without a skip input"
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        elif tuple(size) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    """Four ViT feature maps -> one-channel map at the input resolution.

    Args:
        in_dim: ViT width. features: fusion width (64 for S, 128 for B, 256 for L).
        out_channels: per-level projection widths ([48, 96, 192, 384] for S, [96, 192, 384, 768] for B).
        final_relu: True for depth (non-negative disparity), False for mask logits.
        deepest_skip: keep ``refinenet4.resConfUnit1`` (present in published checkpoints, never used in the
            forward pass); the trainable copy drops it so DDP needs no ``find_unused_parameters``.
        full_resolution: True (DPT, the paper): ``refinenet1`` upsamples x2 and the output convolutions run on
            the map resized to the input size. False: they run on the finest grid (4x the patch grid, stride
            3.5 px for patch 14) and the one-channel output is resized bilinearly, as SAM and SimpleClick
            predict at 1/4 resolution; same parameters, ~1.5x fewer FLOPs at 1036 (docs/benchmarks.md).
    """

    def __init__(
        self,
        *,
        in_dim: int,
        features: int,
        out_channels: tuple[int, int, int, int],
        final_relu: bool,
        deepest_skip: bool = True,
        full_resolution: bool = True,
    ) -> None:
        super().__init__()
        self.full_resolution = full_resolution
        oc = list(out_channels)
        self.projects = nn.ModuleList([nn.Conv2d(in_dim, c, 1) for c in oc])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(features, with_skip=i < 4 or deepest_skip))
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(True) if final_relu else nn.Identity(),
            nn.Identity(),
        )

    def forward(self, feats: list[Tensor], out_size: tuple[int, int]) -> Tensor:
        """feats: 4 x (B,C,h,w) -> (B,1,*out_size)."""
        s = self.scratch
        rn = [
            getattr(s, f"layer{i + 1}_rn")(resize(proj(f)))
            for i, (f, proj, resize) in enumerate(zip(feats, self.projects, self.resize_layers))
        ]
        path = s.refinenet4(rn[3], size=rn[2].shape[2:])
        path = s.refinenet3(path, rn[2], size=rn[1].shape[2:])
        path = s.refinenet2(path, rn[1], size=rn[0].shape[2:])
        if not self.full_resolution:
            path = s.refinenet1(path, rn[0], size=rn[0].shape[2:])  # B,F,4h,4w: no x2 upsampling
            out = s.output_conv2(s.output_conv1(path))  # B,1,4h,4w
            return F.interpolate(out, size=out_size, mode="bilinear", align_corners=True)
        path = s.refinenet1(path, rn[0])  # B,F,8h,8w
        out = F.interpolate(s.output_conv1(path), size=out_size, mode="bilinear", align_corners=True)
        return s.output_conv2(out)  # B,1,H,W
