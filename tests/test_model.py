"""The OIS network: each equation on hand-made tensors, and each flag changes the computation."""
from __future__ import annotations

import pytest
import torch

from ois_lightning.config.load import load_config
from ois_lightning.model.losses import NormalizedFocalLoss
from ois_lightning.model import build_model
from ois_lightning.model import prompts
from ois_lightning.model.fusion import TokenToImage
from ois_lightning.model.objectness import ObjectAwareAttention, object_mask
from ois_lightning.model.order import OrderAwareAttention, normalize_depth, order_maps
from ois_lightning.model.prompts import SparseClickEncoder, click_disks

from .helpers import TINY


def _model(*overrides: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = load_config(None, TINY + list(overrides))
    return build_model(cfg.model).eval()


def _clicks():
    coords = torch.tensor([[[40.0, 40.0], [80.0, 20.0], [10.0, 100.0]]])
    labels = torch.tensor([[1, 0, 0]])
    return coords, labels


def _inputs():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 112, 112, generator=g)
    depth_a = torch.rand(1, 1, 112, 112, generator=g)
    depth_b = torch.rand(1, 1, 112, 112, generator=g)
    prev = torch.zeros(1, 1, 112, 112)
    prev[..., 20:70, 20:70] = 1
    return image, depth_a, depth_b, prev


# --- Eq. 1 / Eq. 2 -----------------------------------------------------------------------------------------

def test_order_maps_equal_eq1_eq2_at_chosen_pixels():
    depth = torch.tensor([[0.0, 0.2, 0.4, 0.6], [0.8, 1.0, 0.1, 0.3]]).view(1, 1, 2, 4)
    coords = torch.tensor([[[0, 1], [1, 1], [0, 3], [1, 2], [0, 0]]], dtype=torch.float)
    labels = torch.tensor([[1, 1, 0, 0, -1]])
    m = order_maps(depth, coords, labels)
    pos_ref = (0.2 + 1.0) / 2  # Eq. 1: mean depth at the positive clicks, shared by both
    assert torch.allclose(m[0, 0], (depth[0, 0] - pos_ref).abs())
    assert torch.allclose(m[0, 1], m[0, 0])
    assert m[0, 2, 1, 0].item() == pytest.approx(abs(0.8 - 0.6))  # Eq. 2: |R - R at negative click 1|
    assert m[0, 3, 0, 2].item() == pytest.approx(abs(0.4 - 0.1))  # own map per negative click
    assert m[0, 4].abs().sum() == 0  # empty slot: no order bias
    assert m[0, 2:4].abs().sum() > 0 and order_maps(depth, coords, labels, "pos")[0, 2:4].abs().sum() == 0
    assert order_maps(depth, coords, labels, "neg")[0, :2].abs().sum() == 0


def test_order_maps_pooled_to_feature_grid_and_in_unit_range():
    depth = normalize_depth(torch.rand(2, 1, 28, 28) * 7 + 3)
    assert depth.min() == 0 and depth.max() == 1
    coords = torch.tensor([[[3.0, 3.0]], [[20.0, 5.0]]])
    m = order_maps(depth, coords, torch.ones(2, 1, dtype=torch.long), out_size=(2, 2))
    assert m.shape == (2, 1, 2, 2) and m.min() >= 0 and m.max() <= 1


def test_metric_depth_is_inverted_before_normalising():
    depth = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 1, 3)  # metres: nearest first
    disp = normalize_depth(depth, "depth")
    assert disp[0, 0, 0, 0] == 1 and disp[0, 0, 0, 2] == 0  # nearest -> 1, like Depth Anything's disparity
    assert torch.allclose(normalize_depth(depth, "depth"), normalize_depth(1 / depth, "disparity"))


# --- Eq. 3 -------------------------------------------------------------------------------------------------

def test_order_aware_attention_suppresses_far_pixels():
    torch.manual_seed(0)
    layer = OrderAwareAttention(dim=8, heads=2, sigma_init=1e4)
    tokens, keys = torch.randn(1, 2, 8), torch.randn(1, 5, 8)
    order = torch.tensor([[[0.0, 0.5, 1.0, 0.0, 0.3], [1.0, 1.0, 0.0, 1.0, 1.0]]])
    _, w = layer(tokens, keys, keys, order, return_weights=True)  # B,h,N,L
    far = (order > 0)[:, None].expand_as(w)  # B,h,N,L
    assert w[far].max() < 1e-6
    assert torch.allclose(w.sum(-1), torch.ones(1, 2, 2))
    assert torch.allclose(w[0, :, 1, 2], torch.ones(2))  # the only near pixel takes all the weight
    _, w_plain = OrderAwareAttention(8, 2, order=False)(tokens, keys, keys, order, return_weights=True)
    assert w_plain.min() > 1e-4  # without order nothing is suppressed
    assert layer.sigma.item() == pytest.approx(1e4, rel=1e-4) and layer.log_sigma.requires_grad


def test_write_back_carries_the_transposed_order_bias():
    """A feature location far (in order) from a click does not read that click's token; without order it does."""
    torch.manual_seed(0)
    layer = TokenToImage(dim=8, heads=2, sigma_init=1e4)
    queries, tokens = torch.randn(1, 3, 8), torch.randn(1, 2, 8)
    order = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])  # B,N,L: token 0 near locations 0 and 2
    changed = tokens.clone()
    changed[0, 1] += 5.0  # token 1 is near locations 1 and 2 only
    a = layer(queries, torch.zeros(1, 3, 8), tokens, torch.zeros_like(tokens), order)
    b = layer(queries, torch.zeros(1, 3, 8), changed, torch.zeros_like(tokens), order)
    assert torch.allclose(a[0, 0], b[0, 0], atol=1e-5)  # location 0 never reads token 1
    assert not torch.allclose(a[0, 1], b[0, 1], atol=1e-3) and not torch.allclose(a[0, 2], b[0, 2], atol=1e-3)
    plain = TokenToImage(dim=8, heads=2, order=False)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "log_sigma"})
    a = plain(queries, torch.zeros(1, 3, 8), tokens, torch.zeros_like(tokens), order)
    b = plain(queries, torch.zeros(1, 3, 8), changed, torch.zeros_like(tokens), order)
    assert not torch.allclose(a[0, 0], b[0, 0], atol=1e-3)  # without order every location reads every token


# --- Eq. 4 / Eq. 5 -----------------------------------------------------------------------------------------

def test_object_aware_attention_separates_foreground_and_background():
    torch.manual_seed(0)
    prev = torch.zeros(1, 1, 4, 4)
    prev[..., :2, :] = 1  # top half foreground
    labels = torch.tensor([[1, 0, -1]])
    allowed = object_mask(prev, labels, (2, 2))  # B,N,4: grid cells 0,1 foreground, 2,3 background
    assert allowed[0, 0].tolist() == [True, True, False, False]
    assert allowed[0, 1].tolist() == [False, False, True, True]
    assert allowed[0, 2].all()
    layer = ObjectAwareAttention(dim=8, heads=2)
    tokens, keys = torch.randn(1, 3, 8), torch.randn(1, 4, 8)
    _, w = layer(tokens, keys, keys, allowed, return_weights=True)
    assert w[0, :, 0, 2:].abs().max() == 0  # positive token: zero weight on background
    assert w[0, :, 1, :2].abs().max() == 0  # negative token: zero weight on foreground
    _, w_first = layer(tokens, keys, keys, None, return_weights=True)  # first round: plain cross-attention
    assert w_first.min() > 0


def test_object_mask_with_empty_foreground_falls_back_to_plain_attention():
    allowed = object_mask(torch.zeros(1, 1, 4, 4), torch.tensor([[1, 0]]), (2, 2))
    _, w = ObjectAwareAttention(8, 2)(torch.randn(1, 2, 8), torch.randn(1, 4, 8), torch.randn(1, 4, 8), allowed,
                                      return_weights=True)
    assert torch.isfinite(w).all() and w.min() > 0


# --- prompts -----------------------------------------------------------------------------------------------

def test_sparse_slots_24_pos_then_24_neg_with_not_a_point_padding():
    enc = SparseClickEncoder(dim=16)
    labels = torch.tensor([[1, 0, 1, -1] + [0] * 30])
    coords = torch.arange(labels.numel() * 2, dtype=torch.float).view(1, -1, 2)
    tokens, slot_coords, slot_labels = enc(coords, labels, (100, 100))
    assert tokens.shape == (1, 48, 16)
    assert slot_labels[0, :2].tolist() == [1, 1] and (slot_labels[0, 2:24] == -1).all()
    assert (slot_labels[0, 24:] == 0).all()  # 30 negatives: the first 24 kept
    assert slot_coords[0, 1].tolist() == coords[0, 2].tolist() and slot_coords[0, 24].tolist() == coords[0, 1].tolist()
    assert torch.allclose(tokens[0, 5], enc.not_a_point[0, 0])
    assert not torch.allclose(tokens[0, 0], tokens[0, 1])  # different positions, different tokens


def test_click_disks():
    disks = click_disks(torch.tensor([[[5.0, 5.0], [0.0, 9.0]]]), torch.tensor([[1, 0]]), (10, 10), radius=2)
    assert disks[0, 0, 5, 5] == 1 and disks[0, 0, 5, 7] == 1 and disks[0, 0, 5, 8] == 0
    assert disks[0, 1, 0, 9] == 1 and disks[0, 1].sum() < disks[0, 0].sum()  # clipped at the border


# --- flags change the computation ----------------------------------------------------------------------------

def _logits(model, depth, prev):
    image = _inputs()[0]
    coords, labels = _clicks()
    enc = model.encode(image, depth=depth)
    return model(enc, coords, labels, prev)


def test_order_flag_controls_depth_dependence():
    _, da, db, prev = _inputs()
    full = _model()
    assert not torch.allclose(_logits(full, da, prev), _logits(full, db, prev))
    wo = _model("model.order.enabled=false")
    assert torch.equal(_logits(wo, da, prev), _logits(wo, db, prev))
    assert all("log_sigma" not in n for n, _ in wo.named_parameters())


def test_write_back_flag_keeps_eq3_and_drops_only_the_write_back_bias():
    _, da, db, prev = _inputs()
    full, wo = _model(), _model("model.order.write_back=false")
    assert full.fusion.to_image.log_sigma is not None and wo.fusion.to_image.log_sigma is None
    assert all(blk.order_attn.log_sigma is not None for blk in wo.fusion.blocks)  # Eq. 3 stays
    assert not torch.allclose(_logits(wo, da, prev), _logits(wo, db, prev))  # depth still matters
    state = {k: v for k, v in full.state_dict().items() if k != "fusion.to_image.log_sigma"}
    wo.load_state_dict(state)  # same weights otherwise: only the write-back bias differs
    assert not torch.allclose(_logits(full, da, prev), _logits(wo, da, prev))


def test_object_flag_controls_previous_mask_dependence():
    _, da, _, prev = _inputs()
    full = _model()
    assert not torch.allclose(_logits(full, da, prev), _logits(full, da, 1 - prev))
    wo = _model("model.object.enabled=false")
    assert torch.equal(_logits(wo, da, prev), _logits(wo, da, 1 - prev))


def test_sparse_off_has_no_tokens(monkeypatch):
    model = _model("model.sparse.enabled=false")
    assert model.sparse is None and model.fusion is None and not model.uses_depth
    assert not any(n.startswith(("sparse.", "fusion.")) for n, _ in model.named_parameters())
    _, da, db, prev = _inputs()
    assert torch.equal(_logits(model, da, prev), _logits(model, db, 1 - prev))  # nothing but dense clicks


def test_dense_off_never_builds_the_disk_map(monkeypatch):
    model = _model("model.dense.enabled=false")
    assert model.dense is None
    monkeypatch.setattr(prompts, "click_disks", lambda *a, **k: (_ for _ in ()).throw(AssertionError("used")))
    _, da, _, prev = _inputs()
    assert _logits(model, da, prev).shape == (1, 1, 112, 112)
    with pytest.raises(AssertionError, match="used"):
        _logits(_model(), da, prev)


def test_block_order_flag_changes_output():
    _, da, _, prev = _inputs()
    a, b = _model(), _model("model.sparse.block_order=order_first")
    assert not torch.allclose(_logits(a, da, prev), _logits(b, da, prev))


def test_frozen_parts_and_gradients_reach_every_trainable_parameter():
    model = _model().train()
    image, depth, _, prev = _inputs()
    coords, labels = _clicks()
    own = model.encode(image)  # the frozen depth head's own map
    assert own.depth is not None and not own.depth.requires_grad and not own.feats[0].requires_grad
    enc = model.encode(image, depth=depth)  # a non-degenerate depth so every order bias is non-zero
    target = torch.zeros(1, 1, 112, 112)
    target[..., 30:60, 30:60] = 1
    NormalizedFocalLoss()(model(enc, coords, labels, prev), target).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert all(n.startswith(("pretrained.", "depth_head.")) for n in frozen) and frozen
    missing = [n for n, p in trainable.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert all(p.grad is None for p in frozen.values())
    assert not model.pretrained.training and not model.depth_head.training  # frozen parts stay in eval mode


def test_unused_refinenet4_skip_is_dropped_from_trainable_head():
    model = _model()
    names = {n for n, _ in model.named_parameters()}
    assert "depth_head.scratch.refinenet4.resConfUnit1.conv1.weight" in names  # checkpoint layout
    assert not any(n.startswith("seg_head.scratch.refinenet4.resConfUnit1") for n in names)


@pytest.mark.parametrize("logits,conv_size", [("input", (112, 112)), ("quarter", (32, 32))])
def test_decoder_logits_flag_sets_where_the_output_convs_run(logits, conv_size):
    """model.decoder.logits: the output convolutions run at the input size (DPT) or on the 4x patch grid
    (112 / 14 * 4 = 32), then only the one-channel logits are resized; the parameters are the same."""
    model = _model(f"model.decoder.logits={logits}")
    seen: list[tuple[int, int]] = []
    model.seg_head.scratch.output_conv2.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    _, da, _, prev = _inputs()
    out = _logits(model, da, prev)
    assert out.shape == (1, 1, 112, 112) and seen == [conv_size]
    assert set(model.state_dict()) == set(_model().state_dict())  # same checkpoint layout
    if logits == "quarter":
        full = _model()  # same seed, same weights: only the resolution of the last convolutions differs
        full.load_state_dict(model.state_dict())
        assert not torch.allclose(_logits(full, da, prev), out)

# --- loss ----------------------------------------------------------------------------------------------------

def test_normalized_focal_loss_ignores_and_prefers_correct_predictions():
    loss = NormalizedFocalLoss()
    target = torch.tensor([[[[1.0, 0.0, -1.0, 1.0]]]])
    good = torch.tensor([[[[4.0, -4.0, 0.0, 4.0]]]])
    bad = -good
    assert loss(good, target) < loss(bad, target)
    ignore_changed = good.clone()
    ignore_changed[..., 2] = 100.0
    assert torch.equal(loss(good, target), loss(ignore_changed, target))
    logits = bad.clone().requires_grad_()
    loss(logits, target).backward()
    assert logits.grad[..., 2] == 0 and logits.grad[..., 0] < 0
