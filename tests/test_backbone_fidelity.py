"""Fidelity to the official code: MAE's layouts and position-embedding resize, LayerNorm eps, Depth Anything's
inference preprocessing, strict ZoeDepth loading, and DAv1 hub directories. References are written here from the
facts (or are timm's / transformers' own models), never with our classes."""
from __future__ import annotations

import dataclasses
import inspect
import json
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import Block
from torch import nn

from ois_lightning.model.specs import SPECS
from ois_lightning.model.backbones import build, build_encoder
from ois_lightning.model.checkpoints import CheckpointError
from ois_lightning.model.depth_encoder import DepthEncoder
from ois_lightning.model.depth_models import DepthAnythingDepth, build_depth_model, lower_bound_size

from .helpers import VITB_SHAPES, official_shapes, random_image, random_state, tiny_zoedepth


# --- MAE: layouts, position embeddings, the 1024 forward --------------------------------------------------

def _mae_timm(depth: int):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224.mae", pretrained=False, dynamic_img_size=True, depth=depth)
    with torch.no_grad():  # timm zero-initialises biases / cls token: randomise so everything matters
        g = torch.Generator().manual_seed(2)
        for name, p in model.named_parameters():
            if p.ndim == 1 or name in ("cls_token", "pos_embed"):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def test_mae_vitb_loads_timm_layout_and_official_wrapper_with_decoder(tmp_path):
    full = {k: tuple(v.shape) for k, v in _mae_timm(12).state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in build("mae-vitb").pretrained.state_dict().items()}
    assert ours == full and len(full) == 150  # the whole ViT-B/16 layout
    state = _mae_timm(2).state_dict()  # files of a 2-block variant keep the test's disk traffic small
    spec = dataclasses.replace(SPECS["mae-vitb"], depth=2, out_indices=(0, 1))
    torch.save(state, tmp_path / "timm.pth")
    official = {"model": {**state, "mask_token": torch.zeros(1, 1, 512), "decoder_embed.weight": torch.zeros(512, 768),
                          "decoder_pos_embed": torch.zeros(1, 197, 512), "decoder_pred.bias": torch.zeros(768)}}
    torch.save(official, tmp_path / "mae_pretrain_vit_base.pth")
    for name in ("timm.pth", "mae_pretrain_vit_base.pth"):
        net = build(spec, tmp_path / name)
        assert net.depth_head is None
        assert all(torch.equal(net.pretrained.state_dict()[k], v) for k, v in state.items())
    del official["model"]["decoder_embed.weight"]
    official["model"]["fc_norm.weight"] = torch.zeros(768)  # a fine-tuned file's key is not dropped
    torch.save(official, tmp_path / "finetuned.pth")
    with pytest.raises(CheckpointError, match=r"unexpected \[pretrained.fc_norm.weight\]"):
        build(spec, tmp_path / "finetuned.pth")


def mae_interpolate_pos_embed(pos_embed: torch.Tensor, new: int) -> torch.Tensor:
    """MAE's ``interpolate_pos_embed`` (facebookresearch/mae util/pos_embed.py): cls entry kept, the square patch
    grid resized with plain bicubic to (new, new), align_corners=False."""
    m, c = math.isqrt(pos_embed.shape[1] - 1), pos_embed.shape[2]
    grid = pos_embed[:, 1:].reshape(1, m, m, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat([pos_embed[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


@torch.no_grad()
def test_mae_encoder_matches_mae_fine_tuning_at_1024(tmp_path):
    """MAE at 1024 as MAE's own code runs it: a timm ViT built at img_size=1024 whose position table was resized
    by MAE's interpolate_pos_embed before loading (what MAE's fine-tuning does)."""
    import timm

    small = _mae_timm(2)  # reduced depth (layout unchanged) to keep a 4096-token forward cheap on CPU
    torch.save(small.state_dict(), tmp_path / "mae.pth")
    state = {**small.state_dict(), "pos_embed": mae_interpolate_pos_embed(small.pos_embed, 64)}
    ref_model = timm.create_model("vit_base_patch16_224.mae", pretrained=False, img_size=1024, depth=2).eval()
    ref_model.load_state_dict(state)
    spec = dataclasses.replace(SPECS["mae-vitb"], depth=2, out_indices=(0, 1))
    net = build(spec, tmp_path / "mae.pth").eval()
    x = random_image(1024, 1024)
    ours = net.pretrained(x)
    ref = ref_model.forward_intermediates(x, indices=[0, 1], norm=True, output_fmt="NCHW", intermediates_only=True)
    assert ours[0].shape == (1, 768, 64, 64)
    assert max((a - b).abs().max().item() for a, b in zip(ours, ref)) < 1e-4
    # negative control: timm's dynamic-size path (anti-aliased resize) gives other features
    timm_dynamic = small.forward_intermediates(x, indices=[0, 1], norm=True, output_fmt="NCHW",
                                               intermediates_only=True)
    assert max((a - b).abs().max().item() for a, b in zip(timm_dynamic, ref)) > 1e-3


@pytest.mark.parametrize("size", [448, 1024])
def test_mae_position_table_is_plain_bicubic(size):
    encoder = build_encoder(dataclasses.replace(SPECS["mae-vitb"], depth=1, out_indices=(0,)))
    with torch.no_grad():
        encoder.pos_embed.normal_(generator=torch.Generator().manual_seed(0))
    grid = size // 16
    ours = encoder._pos_embed(grid, grid)
    ref = mae_interpolate_pos_embed(encoder.pos_embed, grid)
    assert ours.shape == (1, 1 + grid * grid, 768)
    assert ((ours - ref).norm() / ref.norm()).item() < 1e-6
    anti_aliased = resample_abs_pos_embed(encoder.pos_embed, (grid, grid), num_prefix_tokens=1)
    assert ((anti_aliased - ref).norm() / ref.norm()).item() > 1e-3  # timm's default is measurably different
    timm_plain = resample_abs_pos_embed(encoder.pos_embed, (grid, grid), num_prefix_tokens=1, antialias=False)
    assert ((timm_plain - ref).norm() / ref.norm()).item() < 1e-6


# --- LayerNorm eps ----------------------------------------------------------------------------------------------

def test_every_layer_norm_has_eps_1e_6_whatever_timm_defaults_to(monkeypatch):
    """Simulate a timm whose Block defaults to torch's LayerNorm (eps 1e-5): our blocks still use 1e-6."""
    params = [p for p in inspect.signature(Block.__init__).parameters.values() if p.default is not p.empty]
    defaults = list(Block.__init__.__defaults__)
    defaults[[p.name for p in params].index("norm_layer")] = nn.LayerNorm
    monkeypatch.setattr(Block.__init__, "__defaults__", tuple(defaults))
    assert Block(8, 2).norm1.eps == 1e-5  # the patch took effect
    nets = [build("tiny"), build(dataclasses.replace(SPECS["mae-vitb"], depth=2, out_indices=(0, 1))),
            DepthEncoder(out_dim=64, patch_size=14, grid=8, dim=32, num_blocks=2, num_heads=2)]
    for net in nets:
        norms = [m for m in net.modules() if isinstance(m, nn.LayerNorm)]
        assert len(norms) >= 5 and all(m.eps == 1e-6 for m in norms), [m.eps for m in norms]


# --- Depth Anything's infer_image -------------------------------------------------------------------------------

@pytest.mark.parametrize("hw,side,expected", [
    ((480, 640), 518, (518, 686)),   # 640 * 518/480 = 690.67 -> 49.33 x 14 -> 49 x 14
    ((640, 480), 518, (686, 518)),
    ((1024, 1024), 518, (518, 518)),  # large images go down to 518 too
    ((518, 693), 518, (518, 700)),   # 693 / 14 = 49.5 -> 50 (half to even, as np.round)
    ((518, 679), 518, (518, 672)),   # 679 / 14 = 48.5 -> 48
    ((300, 2000), 518, (518, 3458)),  # 2000 * 518/300 = 3453.3 -> 246.67 -> 247 x 14
    ((520, 520), 520, (532, 532)),   # 520 / 14 = 37.14 -> 518 < 520: raised to the next multiple
])
def test_lower_bound_size_by_hand(hw, side, expected):
    assert lower_bound_size(*hw, side, 14) == expected


@pytest.mark.parametrize("name,align", [("dav2-vits", True), ("dav1-vitb", False)])
def test_official_preprocessing_resizes_like_cv2_and_back_with_the_versions_align_corners(name, align, monkeypatch):
    seen = []

    def raw(self, x):  # a known map at the model size, so the back-resize is checked alone
        seen.append(x)
        h, w = x.shape[-2:]
        ramp = torch.arange(h).view(1, 1, h, 1) * 3.0 + torch.arange(w).view(1, 1, 1, w) ** 1.5
        return ramp.expand(len(x), 1, h, w)

    monkeypatch.setattr(DepthAnythingDepth, "raw", raw)
    model = DepthAnythingDepth(name, None)
    image = (np.random.default_rng(1).random((48, 64, 3)) * 255).astype(np.uint8)
    depth, kind = model.predict(image)
    assert kind == "disparity" and depth.shape == (48, 64)
    (x,) = seen
    assert x.shape == (1, 3, 518, 686)
    # the input the network saw: cv2 INTER_CUBIC of the float RGB image in [0,1], ImageNet-normalised
    ref = cv2.resize(image / 255.0, (686, 518), interpolation=cv2.INTER_CUBIC)
    ref = (ref - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert np.abs(x[0].permute(1, 2, 0).numpy() - ref).max() < 1e-4
    back = F.interpolate(raw(None, x), (48, 64), mode="bilinear", align_corners=align)[0, 0].numpy()
    other = F.interpolate(raw(None, x), (48, 64), mode="bilinear", align_corners=not align)[0, 0].numpy()
    assert np.abs(depth - back).max() < 1e-4 and np.abs(depth - other).max() > 1e-1


def test_input_preprocessing_runs_at_the_given_side(monkeypatch):
    seen = []
    monkeypatch.setattr(DepthAnythingDepth, "raw", lambda self, x: seen.append(x.shape) or x[:, :1])
    build_depth_model("tiny", None, "input").predict(np.zeros((48, 64, 3), np.uint8), 112)
    assert seen == [(1, 3, 84, 112)]
    with pytest.raises(ValueError, match="preprocess='bilinear' is not one of"):
        build_depth_model("tiny", None, "bilinear")


# --- ZoeDepth: strict loading -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoe_state(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoe")
    model = tiny_zoedepth()
    model.save_pretrained(folder)
    return model, load_file(str(folder / "model.safetensors"))


def test_zoedepth_loads_exactly_and_names_every_bad_key(tmp_path, zoe_state):
    from ois_lightning.model.depth_models import load_zoedepth

    model, state = zoe_state
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(tmp_path)
    loaded = load_zoedepth(tmp_path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    broken = dict(state)
    del broken["neck.convs.1.weight"]
    broken["metric_head.extra.weight"] = torch.zeros(3)
    broken["neck.convs.0.weight"] = torch.zeros(16, 7, 3, 3)
    save_file(broken, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as e:
        load_zoedepth(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "missing [neck.convs.1.weight]" in msg
    assert "unexpected [metric_head.extra.weight]" in msg
    assert "neck.convs.0.weight (16, 7, 3, 3) vs (16, 8, 3, 3)" in msg


# --- DAv1 hub directories (LiheYoung/depth_anything_vitb14) -----------------------------------------------------

DAV1_VITB_CONFIG = {"encoder": "vitb", "features": 128, "out_channels": [96, 192, 384, 768], "use_bn": False,
                    "use_clstoken": False}


@pytest.fixture(scope="module")
def dav1_dir(tmp_path_factory):
    """DAv1's hub layout: config.json of DepthAnything's arguments + pytorch_model.bin (official keys)."""
    folder = tmp_path_factory.mktemp("dav1_vitb14")
    state = random_state(official_shapes(**VITB_SHAPES), seed=7)
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(DAV1_VITB_CONFIG))
    return folder, state


def test_dav1_hub_directory_loads_as_dav1_and_is_refused_as_dav2(dav1_dir):
    folder, state = dav1_dir
    loaded = build("dav1-vitb", folder).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    with pytest.raises(CheckpointError, match=r"not the network of 'dav2-vitb': out_indices \(8, 9, 10, 11\)"):
        build("dav2-vitb", folder)
    # the bare file carries no version: it loads under either name (the docs warn about this)
    assert build("dav2-vitb", folder / "pytorch_model.bin").depth_head is not None


def test_dav1_hub_directory_with_another_encoder_or_no_weights_fails(tmp_path, dav1_dir):
    (tmp_path / "config.json").write_text(json.dumps({**DAV1_VITB_CONFIG, "encoder": "vits"}))
    with pytest.raises(CheckpointError, match="embed_dim 384 \\(expected 768\\)"):
        build("dav1-vitb", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(DAV1_VITB_CONFIG))
    with pytest.raises(CheckpointError, match="no model.safetensors, model.safetensors.index.json or pytorch_model"):
        build("dav1-vitb", tmp_path)
