"""Table 5's "DepthEncoder" baseline (paper App. A.4): depth fed to the network through an extra encoder.

Following MM-SAM's recipe for extra modalities, the normalised depth map (1 = nearest) goes through its own
trainable ViT (the depth replicated to three channels, patch size of the image encoder so the grids align); the
last block's features are projected (1x1 conv) to the image-feature width and added to every image feature map
the decoder reads. The projection starts at zero, so training starts from the image-only network. The paper runs
this row with order-aware attention off (``config.validate`` enforces it), so depth enters only through here.
"""
from __future__ import annotations

from torch import Tensor, nn

from .vit import ViTEncoder


class DepthEncoder(nn.Module):
    """(B,1,H,W) depth in [0,1] -> (B,out_dim,H/p,W/p) features to add to the image features.

    Args:
        out_dim: image-feature width (the ViT's embed_dim). patch_size: the image encoder's patch size.
        grid: position-embedding grid side (input_size / patch_size, so training size needs no resampling).
        dim, num_blocks, num_heads: shape of the depth ViT.
    """

    def __init__(self, *, out_dim: int, patch_size: int, grid: int, dim: int, num_blocks: int, num_heads: int
                 ) -> None:
        super().__init__()
        self.encoder = ViTEncoder(
            embed_dim=dim, depth=num_blocks, num_heads=num_heads, patch_size=patch_size, pretrain_grid=grid,
            out_indices=(num_blocks - 1,), layer_scale=False, pos_interp="timm",
        )
        self.proj = nn.Conv2d(dim, out_dim, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, depth: Tensor) -> Tensor:
        """depth (B,1,H,W) normalised -> (B,out_dim,H/p,W/p)."""
        (feat,) = self.encoder(depth.expand(-1, 3, -1, -1))  # B,dim,h,w
        return self.proj(feat)
