"""What the :class:`~ois_lightning.protocol.predictor.Predictor` shows besides masks: the order maps (paper Eq. 1-2,
Fig. 3) and the order-aware attention (Eq. 3, Fig. 6) of a set of clicks, in the original frame."""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from ..model import ImageEncoding, OISModel
from ..model.introspection import order_attention_weights
from ..model.order import order_maps
from .geometry import Mapping


class PredictorMaps:
    """Order maps and attention maps of :class:`~ois_lightning.protocol.predictor.Predictor` (mixed into it: these
    are its attributes, and ``_clicks``, ``_tensors`` and ``autocast`` its methods)."""

    model: OISModel
    input_size: int
    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    frame: Mapping | None
    enc: ImageEncoding | None

    def map_to_original(self, m: np.ndarray) -> np.ndarray:
        """A map over the model input (S,S) or the feature grid (h,w) -> the original frame (H,W), bilinear."""
        size = self.input_size
        m = cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR) if m.shape[0] != size else m
        rh, rw = self.resized_size
        return cv2.resize(m[:rh, :rw], self.original_size[::-1], interpolation=cv2.INTER_LINEAR)

    @torch.no_grad()
    def order_map(self, points: np.ndarray, labels: np.ndarray, mode: str = "pos+neg") -> dict:
        """The order maps of these clicks on the model's depth, in the original frame (paper Fig. 3):
        ``positive`` (H,W) float32 shared by the positive clicks (Eq. 1; None without one), ``negatives`` one
        (H,W) per negative click in order (Eq. 2), ``depth`` (H,W) the normalised depth (1 = nearest).
        ``mode``: the click types that get a map (Table 9; the model's own is ``model.order_mode``)."""
        clicks = self._clicks(points, labels)
        assert self.enc is not None and self.frame is not None
        if self.enc.depth is None:
            raise ValueError("order maps need a model that reads depth (model.order or model.depth_encoder on)")
        depth = self.enc.depth[:1].float()  # 1,1,S,S (the unmirrored view with flip)
        coords, labels_t = self._tensors(self.frame, [clicks])  # 1,K,2 / 1,K
        maps = order_maps(depth, coords, labels_t, mode)[0].cpu().numpy()  # K,S,S
        positive = [k for k, c in enumerate(clicks) if c.positive]
        return {"positive": self.map_to_original(maps[positive[0]]) if positive else None,
                "negatives": [self.map_to_original(maps[k]) for k, c in enumerate(clicks) if not c.positive],
                "depth": self.map_to_original(depth[0, 0].cpu().numpy())}

    @torch.no_grad()
    def attention(self, points: np.ndarray, labels: np.ndarray, block: int = 0) -> dict:
        """Order-aware attention of fusion block ``block`` (paper Eq. 3, Fig. 6) in one round without a previous
        mask: for each click its token's weights over the feature grid, mean over heads, in the original frame
        (H,W) float32, ``before`` and ``after`` the order bias (lists in click order; None for a click beyond the
        model's slots)."""
        clicks = self._clicks(points, labels)
        assert self.enc is not None and self.frame is not None
        enc = self.enc.select(slice(0, 1))  # the unmirrored view with flip
        coords, labels_t = self._tensors(self.frame, [clicks])  # 1,K,2 / 1,K
        with self.autocast():
            before, after = order_attention_weights(self.model, enc, coords, labels_t, None, block)  # 1,h,N,L
        h, w = enc.feats[-1].shape[-2:]
        sparse = self.model.sparse
        rank = {True: iter(range(sparse.max_pos)), False: iter(range(sparse.max_pos, sparse.num_slots))}
        slots = [next(rank[c.positive], None) for c in clicks]

        def maps(weights: Tensor) -> list[np.ndarray | None]:
            grid = weights[0].float().mean(0).view(-1, h, w).cpu().numpy()  # N,h,w
            return [None if s is None else self.map_to_original(grid[s]) for s in slots]

        return {"before": maps(before), "after": maps(after), "block": block}
