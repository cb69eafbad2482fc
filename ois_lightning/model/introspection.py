"""Inspecting one click round of :class:`~ois_lightning.model.OISModel`: the order-aware attention weights of a
fusion block before and after the order bias (paper Eq. 3, Fig. 6), read without changing the forward pass."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from .ois import ImageEncoding, OISModel


@contextmanager
def captured_inputs(module: nn.Module) -> Iterator[list[tuple]]:
    """The positional inputs of every call of ``module`` while open (a forward pre-hook, removed on exit)."""
    calls: list[tuple] = []
    handle = module.register_forward_pre_hook(lambda _, args: calls.append(args))
    try:
        yield calls
    finally:
        handle.remove()


def order_attention_weights(model: OISModel, enc: ImageEncoding, coords: Tensor, labels: Tensor,
                            prev_mask: Tensor | None = None, block: int = 0) -> tuple[Tensor, Tensor]:
    """One click round; the weights (B,heads,N,L) of fusion block ``block``'s order-aware attention on the
    tokens it received: before the order bias, softmax(QK^T / sqrt d), and after, softmax(QK^T / sqrt d - sigma M)
    (Eq. 3). N: the sparse slots (positives first, negatives from ``max_pos``), L: the h*w feature grid."""
    if model.fusion is None or model.order_mode is None:
        raise ValueError("attention weights need order-aware attention (model.sparse and model.order on)")
    layer = model.fusion.blocks[block].order_attn
    with torch.no_grad(), captured_inputs(layer) as calls:
        model(enc, coords, labels, prev_mask)
        tokens, keys, values, order = calls[0]
        _, before = layer(tokens, keys, values, None, return_weights=True)
        _, after = layer(tokens, keys, values, order, return_weights=True)
    return before, after
