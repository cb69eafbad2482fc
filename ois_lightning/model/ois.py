"""The OIS network (paper Fig. 2): frozen encoder + frozen depth head, run once per image; per click round,
dense and sparse prompts, order/object-aware fusion and a trainable DPT decoder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .backbones import build, build_head
from .checkpoints import init_from_depth_head
from .dense_fusion import DenseSelfAttentionFusion
from .depth_encoder import DepthEncoder
from .depth_models import IMAGENET_MEAN, IMAGENET_STD, DepthModel, build_depth_model
from .dpt import DPTHead
from .fusion import SparseFusion
from .inputs import uses_depth
from .objectness import object_mask
from .order import normalize_depth, order_maps
from .prompts import PAD, DenseClickEncoder, SparseClickEncoder
from .specs import BackboneSpec
from .vit import ViTEncoder

# The ``model`` and ``data.depth`` sections of the run config (``ois_lightning.config.schema.ModelConfig`` and
# ``DepthConfig``, or DictConfigs of them), read by attribute: model/ imports nothing of the config.
ModelSettings = Any
DepthSettings = Any


@dataclass
class ImageEncoding:
    """What one encoder pass yields; reused for every click on the image."""

    feats: list[Tensor]  # 4 x (B,D,h,w)
    depth: Tensor | None  # (B,1,H,W) normalised to [0,1], 1 = nearest; None when nothing uses depth
    size: tuple[int, int]  # (H, W) of the input

    def select(self, index: Tensor | slice) -> "ImageEncoding":
        """The encoding of a subset of the batch."""
        depth = self.depth[index] if self.depth is not None else None
        return ImageEncoding([f[index] for f in self.feats], depth, self.size)


class OISModel(nn.Module):
    """Order-Aware Interactive Segmentation.

    Parameter names: ``pretrained.*`` (ViT) and ``depth_head.*`` (DPT) follow Depth Anything V2, so a
    published checkpoint loads strictly; ``seg_head.*`` is the trainable decoder; ``dense.*``, ``sparse.*``,
    ``fusion.*`` are the prompt parts; ``dense_fusion.*`` is the SegNext-style dense self-attention of the
    ``model.fusion=dense_self_attention`` baseline. A part whose flag is off is not built (``None``).
    """

    def __init__(
        self,
        *,
        spec: BackboneSpec,
        pretrained: ViTEncoder,
        depth_head: DPTHead | None,
        seg_head: DPTHead,
        dense: DenseClickEncoder | None,
        sparse: SparseClickEncoder | None,
        fusion: SparseFusion | None,
        order_mode: str | None,
        use_object: bool,
        freeze_encoder: bool = True,
        dense_fusion: DenseSelfAttentionFusion | None = None,
        depth_encoder: DepthEncoder | None = None,
        depth_model: DepthModel | None = None,
    ) -> None:
        super().__init__()
        if dense is None and sparse is None:
            raise ValueError("OIS needs at least one prompt path: dense or sparse")
        self.spec = spec
        self.pretrained, self.depth_head, self.seg_head = pretrained, depth_head, seg_head
        self.dense, self.sparse, self.fusion = dense, sparse, fusion
        self.dense_fusion = dense_fusion
        self.depth_encoder = depth_encoder  # Table 5 baseline: depth through an extra encoder
        self.depth_model = depth_model  # Table 6: a separate frozen depth model replaces the depth head
        self.order_mode = order_mode if sparse is not None else None
        self.use_object = use_object and sparse is not None
        self.freeze_encoder = freeze_encoder
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if freeze_encoder:
            for module in (self.pretrained, self.depth_head):
                if module is not None:
                    module.requires_grad_(False)

    @property
    def uses_depth(self) -> bool:
        return self.order_mode is not None or self.depth_encoder is not None

    def train(self, mode: bool = True) -> "OISModel":
        super().train(mode)
        if self.freeze_encoder:  # frozen parts stay in eval mode
            self.pretrained.eval()
            if self.depth_head is not None:
                self.depth_head.eval()
        if self.depth_model is not None:
            self.depth_model.eval()
        return self

    def encode(self, image: Tensor, depth: Tensor | None = None, depth_kind: str = "disparity") -> ImageEncoding:
        """image (B,3,H,W) RGB in [0,1]; depth (B,1,H,W) from another source, or None to use the depth head."""
        size = (image.shape[-2], image.shape[-1])
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            feats = self.pretrained((image - self.mean) / self.std)
            if self.uses_depth and depth is None:
                if self.depth_model is not None:
                    depth, depth_kind = self.depth_model(image), self.depth_model.kind
                elif self.depth_head is None:
                    raise ValueError("this backbone has no depth head: set data.depth.model, or data.depth.source "
                                     "to 'file' or 'gt'")
                else:
                    depth = torch.relu(self.depth_head(feats, size))
        if depth is not None:
            depth = normalize_depth(depth.float(), depth_kind) if self.uses_depth else None
        if self.depth_encoder is not None:
            extra = self.depth_encoder(depth)  # B,D,h,w
            feats = [f + extra for f in feats]
        return ImageEncoding(feats, depth, size)

    def forward(
        self, enc: ImageEncoding, coords: Tensor, labels: Tensor, prev_mask: Tensor | None = None
    ) -> Tensor:
        """One click round -> mask logits (B,1,H,W).

        coords (B,K,2) float (y, x) input pixels; labels (B,K) 1 pos / 0 neg / -1 none; prev_mask (B,1,H,W)
        in {0,1} from the previous round, or None in the first round (then object-aware attention is plain
        cross-attention, Sec. 3.3). An all-zero prev_mask gives the same: positive slots find no foreground and
        fall back to unmasked rows, negative slots see everything.
        """
        feats = enc.feats
        h, w = feats[-1].shape[-2:]
        if self.dense is not None:
            dense = self.dense(coords, labels, enc.size)  # B,D,h,w
            feats = [f + dense for f in feats]
        if self.dense_fusion is not None:
            update = self.dense_fusion(feats[-1], prev_mask)  # B,D,h,w
            feats = [f + update for f in feats]
        if self.sparse is not None:
            tokens, slot_coords, slot_labels = self.sparse(coords, labels, enc.size)  # B,N,C
            order = None
            if self.order_mode is not None:
                if enc.depth is None:
                    raise ValueError("order-aware attention needs a depth map; encode() got none")
                order = order_maps(enc.depth, slot_coords, slot_labels, self.order_mode, (h, w)).flatten(2)
            allowed = None
            if self.use_object and prev_mask is not None:
                allowed = object_mask(prev_mask, slot_labels, (h, w))  # B,N,L
            scale = coords.new_tensor(enc.size)
            token_pe = self.sparse.pe((slot_coords + 0.5) / scale) * (slot_labels != PAD)[..., None]
            update = self.fusion(
                feats[-1], self.sparse.pe.grid(h, w), tokens, token_pe, order, allowed
            )
            feats = [f + update for f in feats]
        return self.seg_head(feats, enc.size)


def build_model(cfg: ModelSettings, depth: DepthSettings | None = None) -> OISModel:
    """OISModel from the ``model`` section of the config (``ois_lightning.config.schema.ModelConfig``) and, for a
    separate depth model (``data.depth.model`` with ``data.depth.source=model``), the ``data.depth`` section.

    ``model.backbone.checkpoint`` loads strictly into the encoder and depth head; with a depth head, the
    segmentation decoder starts from the same weights (Sec. 4.1).
    """
    backbone = build(cfg.backbone.name, cfg.backbone.checkpoint)
    spec = backbone.spec
    order_mode = cfg.order.clicks.value if cfg.order.enabled else None
    sparse = fusion = None
    if cfg.sparse.enabled:
        s = cfg.sparse
        sparse = SparseClickEncoder(s.dim, max_pos=s.max_pos, max_neg=s.max_neg)
        fusion = SparseFusion(
            feat_dim=spec.embed_dim, dim=s.dim, heads=s.num_heads, ffn_dim=s.ffn_dim, blocks=s.num_blocks,
            order=cfg.order.enabled, sigma_init=cfg.order.sigma_init,
            order_first=s.block_order.value == "order_first", order_write_back=cfg.order.write_back,
        )
    dense = None
    if cfg.dense.enabled:
        dense = DenseClickEncoder(out_dim=spec.embed_dim, patch_size=spec.patch_size, radius=cfg.dense.radius)
    dense_fusion = None
    if cfg.fusion == "dense_self_attention":  # config.checks.validate: dense on, sparse off
        dense_fusion = DenseSelfAttentionFusion(dim=spec.embed_dim, heads=spec.num_heads, patch_size=spec.patch_size)
    seg_head = build_head(spec, final_relu=False, deepest_skip=False,
                          full_resolution=cfg.decoder.logits == "input")
    if cfg.backbone.checkpoint is not None and backbone.depth_head is not None:
        init_from_depth_head(seg_head, backbone.depth_head)
    depth_encoder = None
    if cfg.depth_encoder.enabled:
        e = cfg.depth_encoder
        grid = cfg.input_size // spec.patch_size
        depth_encoder = DepthEncoder(out_dim=spec.embed_dim, patch_size=spec.patch_size, grid=grid, dim=e.dim,
                                     num_blocks=e.num_blocks, num_heads=e.num_heads)
    depth_model = None
    if uses_depth(cfg) and depth is not None and depth.model is not None and depth.source == "model":
        depth_model = build_depth_model(depth.model, depth.checkpoint, depth.preprocess)
    return OISModel(
        spec=spec,
        pretrained=backbone.pretrained,
        depth_head=backbone.depth_head,
        seg_head=seg_head,
        dense=dense,
        sparse=sparse,
        fusion=fusion,
        order_mode=order_mode if cfg.sparse.enabled else None,
        use_object=cfg.object.enabled,
        freeze_encoder=cfg.backbone.freeze,
        dense_fusion=dense_fusion,
        depth_encoder=depth_encoder,
        depth_model=depth_model,
    )
