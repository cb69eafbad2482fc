"""Prompt encoders (paper Sec. 3.4 and 4.1): dense click maps and sparse click tokens.

Clicks arrive as ``coords`` (B,K,2) float (y, x) in input pixels and ``labels`` (B,K) long:
1 positive, 0 negative, -1 no click (padding).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

POS, NEG, PAD = 1, 0, -1


def click_disks(coords: Tensor, labels: Tensor, size: tuple[int, int], radius: float) -> Tensor:
    """Two-channel disk map (B,2,H,W): channel 0 positive clicks, channel 1 negative (Sec. 4.1).

    A pixel (y, x) is inside a click's disk iff (y - cy)^2 + (x - cx)^2 <= radius^2. The test runs only on a
    window of (2r+3)^2 pixels around each click (r = ceil(radius)), outside of which no pixel can pass it, and
    the hits are scattered into the map: the same map as testing every pixel, at a cost independent of H*W.
    """
    h, w = size
    r = math.ceil(radius) + 1
    offsets = torch.arange(-r, r + 1, device=coords.device)  # P
    base = coords.detach().floor().long()  # B,K,2
    ys, xs = base[..., 0, None] + offsets, base[..., 1, None] + offsets  # B,K,P
    dy2 = (ys.to(coords.dtype) - coords[..., 0, None]) ** 2  # B,K,P
    dx2 = (xs.to(coords.dtype) - coords[..., 1, None]) ** 2
    inside = dy2[..., :, None] + dx2[..., None, :] <= radius**2  # B,K,P,P
    in_image = ((ys >= 0) & (ys < h))[..., :, None] & ((xs >= 0) & (xs < w))[..., None, :]
    keep = inside & in_image & ((labels == POS) | (labels == NEG))[..., None, None]
    channel = (labels == NEG).long()[..., None, None]  # 0 positive, 1 negative
    index = channel * (h * w) + ys.clamp(0, h - 1)[..., :, None] * w + xs.clamp(0, w - 1)[..., None, :]
    maps = coords.new_zeros(len(coords), 2 * h * w)
    maps.scatter_reduce_(1, index.flatten(1), keep.flatten(1).to(coords.dtype), reduce="amax")
    return maps.view(-1, 2, h, w)


class DenseClickEncoder(nn.Module):
    """Dense prompt: click-disk map -> one conv (kernel = stride = patch) -> (B,D,h,w), added to the features.

    Dense embeddings D of Sec. 3.4; Sec. 4.1: a two-channel (positive / negative) map, one convolution layer.
    """

    def __init__(self, *, out_dim: int, patch_size: int, radius: float) -> None:
        super().__init__()
        self.radius = radius
        self.conv = nn.Conv2d(2, out_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, coords: Tensor, labels: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(click_disks(coords, labels, size, self.radius))


class FourierPositionEncoding(nn.Module):
    """Random Fourier features of normalised (y, x) in [0, 1] -> C channels (as SAM's prompt encoder)."""

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("gaussian", scale * torch.randn(2, dim // 2))

    def forward(self, yx: Tensor) -> Tensor:
        """yx: (...,2) in [0,1] -> (...,C)."""
        proj = (2 * yx - 1) @ self.gaussian * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def grid(self, h: int, w: int) -> Tensor:
        """Encoding of the centres of an h x w grid: (h*w, C)."""
        ys = (torch.arange(h, device=self.gaussian.device) + 0.5) / h
        xs = (torch.arange(w, device=self.gaussian.device) + 0.5) / w
        yx = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).view(-1, 2)
        return self(yx)


class SparseClickEncoder(nn.Module):
    """Sparse prompt: 48 slots (24 positive then 24 negative), Sec. 4.1.

    A click's token is the Fourier encoding of its position plus a learned type embedding; an empty slot holds
    the learned "not-a-point" embedding. Clicks beyond a type's slot count are dropped (first ones kept).
    """

    def __init__(self, dim: int, *, max_pos: int = 24, max_neg: int = 24) -> None:
        super().__init__()
        self.max_pos, self.max_neg = max_pos, max_neg
        self.pe = FourierPositionEncoding(dim)
        self.type_embed = nn.Embedding(2, dim)  # index 0 negative, 1 positive
        self.not_a_point = nn.Parameter(torch.randn(1, 1, dim) * 0.02)

    @property
    def num_slots(self) -> int:
        return self.max_pos + self.max_neg

    def slots(self, coords: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Arrange clicks into slots: -> coords (B,N,2), labels (B,N) with -1 for empty slots."""
        b, k = labels.shape
        n = self.num_slots
        is_pos, is_neg = labels == POS, labels == NEG
        pos_rank = is_pos.long().cumsum(1) - 1
        neg_rank = is_neg.long().cumsum(1) - 1
        slot = torch.full_like(labels, n)  # n = the overflow bin, cut below
        slot = torch.where(is_pos & (pos_rank < self.max_pos), pos_rank, slot)
        slot = torch.where(is_neg & (neg_rank < self.max_neg), self.max_pos + neg_rank, slot)
        out_labels = labels.new_full((b, n + 1), PAD).scatter(1, slot, torch.where(slot < n, labels, PAD))
        out_coords = coords.new_zeros(b, n + 1, 2).scatter(1, slot[..., None].expand(-1, -1, 2), coords)
        return out_coords[:, :n], out_labels[:, :n]

    def forward(self, coords: Tensor, labels: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """-> tokens (B,N,C), slot coords (B,N,2), slot labels (B,N)."""
        coords, labels = self.slots(coords, labels)
        scale = coords.new_tensor([size[0], size[1]])
        tokens = self.pe((coords + 0.5) / scale) + self.type_embed(labels.clamp(min=0))
        tokens = torch.where((labels == PAD)[..., None], self.not_a_point.expand_as(tokens), tokens)
        return tokens, coords, labels
