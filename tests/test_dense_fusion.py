"""The SegNext-style dense self-attention baseline (``model.fusion=dense_self_attention``)."""
from __future__ import annotations

import pytest
import torch

from ois_lightning.config.schema import ConfigError
from ois_lightning.config.load import load_config
from ois_lightning.model.losses import NormalizedFocalLoss
from ois_lightning.model import build_model
from ois_lightning.model.dense_fusion import SEGNEXT_BLOCKS, DenseSelfAttentionFusion

from .helpers import REPO, TINY


DENSE = ["model.fusion=dense_self_attention", "model.sparse.enabled=false"]


def _model(*overrides: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(load_config(None, TINY + list(overrides)).model).eval()


def _inputs():
    g = torch.Generator().manual_seed(3)
    image = torch.rand(2, 3, 112, 112, generator=g)
    coords = torch.tensor([[[40.0, 40.0], [80.0, 20.0]], [[10.0, 90.0], [60.0, 60.0]]])
    labels = torch.tensor([[1, 0], [1, -1]])
    prev = torch.zeros(2, 1, 112, 112)
    prev[:, :, 20:70, 20:70] = 1
    return image, coords, labels, prev


def test_config_requires_dense_and_rejects_sparse():
    with pytest.raises(ConfigError, match="model.sparse.enabled=false"):
        load_config(None, TINY + ["model.fusion=dense_self_attention"])
    with pytest.raises(ConfigError, match="model.dense.enabled=true"):
        load_config(None, TINY + DENSE + ["model.dense.enabled=false"])
    cfg = load_config(REPO / "experiments" / "dense_baseline.yaml", ["weights.dav2-vitb=dav2.pth"])
    assert cfg.model.fusion.value == "dense_self_attention" and not cfg.model.sparse.enabled


def test_toggle_builds_the_blocks_and_changes_the_output():
    image, coords, labels, prev = _inputs()
    dense, plain = _model(*DENSE), _model("model.sparse.enabled=false")  # same seed: shared parts equal
    assert plain.dense_fusion is None and isinstance(dense.dense_fusion, DenseSelfAttentionFusion)
    assert len(dense.dense_fusion.blocks) == SEGNEXT_BLOCKS
    assert any(k.startswith("dense_fusion.blocks.1.attn.qkv") for k in dense.state_dict())
    assert dense.sparse is None and dense.fusion is None and not dense.uses_depth
    with torch.no_grad():
        enc = dense.encode(image)
        out = dense(enc, coords, labels, prev)
        assert out.shape == (2, 1, 112, 112)
        assert not torch.allclose(out, plain(enc, coords, labels, prev))
        assert not torch.allclose(out, dense(enc, coords, labels, torch.zeros_like(prev)))  # the mask is a prompt
        assert not torch.allclose(out, dense(enc, coords + 7, labels, prev))  # and the clicks


def test_no_previous_mask_is_an_empty_mask():
    image, coords, labels, prev = _inputs()
    model = _model(*DENSE)
    with torch.no_grad():
        enc = model.encode(image)
        assert torch.allclose(model(enc, coords, labels, None), model(enc, coords, labels, torch.zeros_like(prev)),
                              atol=1e-6)


def test_deepest_level_is_the_self_attended_map():
    torch.manual_seed(0)
    fusion = DenseSelfAttentionFusion(dim=16, heads=2, patch_size=4, blocks=1)
    feat, prev = torch.randn(1, 16, 3, 5), (torch.rand(1, 1, 12, 20) > 0.5).float()
    update = fusion(feat, prev)
    assert update.shape == feat.shape
    x = (feat + fusion.mask_embed(prev)).flatten(2).transpose(1, 2)  # 1,15,16
    expected = fusion.blocks(x).transpose(1, 2).reshape(1, 16, 3, 5)
    assert torch.allclose(feat + update, expected, atol=1e-6)
    # every location attends to every other: changing one corner feature changes the far corner's update
    moved = feat.clone()
    moved[0, :, 0, 0] += 3.0 * torch.randn(16)  # not a constant shift, which LayerNorm would remove
    assert (fusion(moved, prev)[..., -1, -1] - update[..., -1, -1]).abs().max() > 1e-4


def test_gradients_reach_the_dense_fusion_not_the_frozen_encoder():
    image, coords, labels, prev = _inputs()
    model = _model(*DENSE).train()
    gt = torch.zeros(2, 1, 112, 112)
    gt[:, :, 30:60, 30:60] = 1
    loss = NormalizedFocalLoss()(model(model.encode(image), coords, labels, prev), gt)
    loss.backward()
    for name in ("dense_fusion.mask_embed.weight", "dense_fusion.blocks.0.attn.qkv.weight",
                 "dense_fusion.blocks.1.mlp.fc2.weight", "dense.conv.weight", "seg_head.projects.0.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.pretrained.parameters())
