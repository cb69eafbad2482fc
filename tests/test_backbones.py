"""Published-checkpoint loading: official DAv2 / DAv1 files, HF Depth Anything directories, strict errors, and
the wiring into build_model (MAE: test_backbone_fidelity.py).

The reference networks here are written from the published layout facts with plain torch functions (or are
timm's / transformers' own models), never with our classes.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ois_lightning.config.schema import ConfigError
from ois_lightning.config.load import load_config
from ois_lightning.model import build_model
from ois_lightning.model.backbones import build
from ois_lightning.model.checkpoints import CheckpointError

from .helpers import TINY, VITB_SHAPES, official_shapes, random_image, random_state, randomize_


# --- the official Depth Anything layout, written from the facts -------------------------------------------------


def ref_vit(sd: dict, x: torch.Tensor, blocks: tuple[int, ...], heads: int, pos: str = "dinov2") -> list:
    """DINOv2 forward from the state dict; normalised tokens (B,N,C) of ``blocks``. ``pos="size"`` resizes the
    position embeddings to the target size instead (the HF/timm way) -- a negative control."""
    p = lambda k: sd["pretrained." + k]  # noqa: E731
    b, _, hh, ww = x.shape
    gh, gw = hh // 14, ww // 14
    t = F.conv2d(x, p("patch_embed.proj.weight"), p("patch_embed.proj.bias"), stride=14).flatten(2).transpose(1, 2)
    t = torch.cat([p("cls_token").expand(b, -1, -1), t], 1)
    pe = p("pos_embed")
    m, c = math.isqrt(pe.shape[1] - 1), pe.shape[2]
    if (gh, gw) != (m, m):
        grid = pe[:, 1:].reshape(1, m, m, c).permute(0, 3, 1, 2)
        if pos == "dinov2":
            grid = F.interpolate(grid, scale_factor=((gh + 0.1) / m, (gw + 0.1) / m), mode="bicubic", antialias=False)
        else:
            grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        pe = torch.cat([pe[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, c)], 1)
    t = t + pe
    n, hd = t.shape[1], c // heads
    outs = []
    for i in range(max(blocks) + 1):
        k = f"blocks.{i}."
        h = F.layer_norm(t, (c,), p(k + "norm1.weight"), p(k + "norm1.bias"), 1e-6)
        qkv = F.linear(h, p(k + "attn.qkv.weight"), p(k + "attn.qkv.bias"))
        q, kk, v = qkv.reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        a = (((q * hd**-0.5) @ kk.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        t = t + p(k + "ls1.gamma") * F.linear(a, p(k + "attn.proj.weight"), p(k + "attn.proj.bias"))
        h = F.layer_norm(t, (c,), p(k + "norm2.weight"), p(k + "norm2.bias"), 1e-6)
        h = F.gelu(F.linear(h, p(k + "mlp.fc1.weight"), p(k + "mlp.fc1.bias")))
        t = t + p(k + "ls2.gamma") * F.linear(h, p(k + "mlp.fc2.weight"), p(k + "mlp.fc2.bias"))
        if i in blocks:
            outs.append(F.layer_norm(t, (c,), p("norm.weight"), p("norm.bias"), 1e-6)[:, 1:])
    return outs


def ref_dpt(sd: dict, tokens: list, gh: int, gw: int) -> torch.Tensor:
    """Depth Anything's DPT head from the state dict (+ the model's final ReLU) -> (B,1,14gh,14gw)."""
    def conv(x, name, **kw):
        return F.conv2d(x, sd[f"depth_head.{name}.weight"], sd.get(f"depth_head.{name}.bias"), **kw)

    def rcu(x, name):
        return x + conv(F.relu(conv(F.relu(x), name + ".conv1", padding=1)), name + ".conv2", padding=1)

    def fuse(level, x, skip=None, size=None):
        name = f"scratch.refinenet{level}"
        if skip is not None:
            x = x + rcu(skip, name + ".resConfUnit1")
        x = rcu(x, name + ".resConfUnit2")
        resize = {"scale_factor": 2} if size is None else {"size": size}
        x = F.interpolate(x, **resize, mode="bilinear", align_corners=True)
        return conv(x, name + ".out_conv")

    layers = []
    for i, t in enumerate(tokens):
        x = conv(t.transpose(1, 2).reshape(t.shape[0], -1, gh, gw), f"projects.{i}")
        if i in (0, 1):
            w, bias = sd[f"depth_head.resize_layers.{i}.weight"], sd[f"depth_head.resize_layers.{i}.bias"]
            x = F.conv_transpose2d(x, w, bias, stride=4 if i == 0 else 2)
        elif i == 3:
            x = conv(x, "resize_layers.3", stride=2, padding=1)
        layers.append(conv(x, f"scratch.layer{i + 1}_rn", padding=1))
    l1, l2, l3, l4 = layers
    path = fuse(4, l4, size=l3.shape[2:])
    path = fuse(3, path, l3, size=l2.shape[2:])
    path = fuse(2, path, l2, size=l1.shape[2:])
    path = fuse(1, path, l1)
    out = conv(path, "scratch.output_conv1", padding=1)
    out = F.interpolate(out, (gh * 14, gw * 14), mode="bilinear", align_corners=True)
    out = F.relu(conv(F.relu(conv(out, "scratch.output_conv2.0", padding=1)), "scratch.output_conv2.2"))
    return F.relu(out)


def ref_depth(sd, x, blocks, heads, pos="dinov2"):
    return ref_dpt(sd, ref_vit(sd, x, blocks, heads, pos), x.shape[-2] // 14, x.shape[-1] // 14)


_TINY = dict(dim=64, depth=4, features=32, out=(16, 32, 64, 64), grid=16)


@pytest.fixture(scope="module")
def vitb_file(tmp_path_factory):
    """A random ViT-B checkpoint in the official layout, saved as a plain state dict."""
    state = random_state(official_shapes(**VITB_SHAPES))
    path = tmp_path_factory.mktemp("ckpt") / "depth_anything_v2_vitb.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture
def tiny_state():
    return random_state(official_shapes(**_TINY), seed=1)


# --- DAv2 / DAv1 official files --------------------------------------------------------------------------------

def test_dav2_vitb_has_the_official_239_keys_and_97_5m_parameters():
    ours = build("dav2-vitb").state_dict()
    official = official_shapes(**VITB_SHAPES)
    assert len(official) == 239 and set(ours) == set(official)
    assert all(tuple(ours[k].shape) == v for k, v in official.items())
    n = sum(v.numel() for v in ours.values())
    assert n == sum(math.prod(s) for s in official.values())
    assert abs(n / 1e6 - 97.5) < 0.05, n


@torch.no_grad()
def test_dav2_vitb_checkpoint_matches_reference_at_non_square_size(vitb_file):
    path, state = vitb_file
    net = build("dav2-vitb", path).eval()
    x = random_image(182, 266)  # 13 x 19 patches: position embeddings resized with DINOv2's 0.1 offset
    ours, ref = net(x), ref_depth(state, x, (2, 5, 8, 11), 12)
    assert ours.shape == (1, 1, 182, 266) and ref.std() > 1e-2
    assert (ours - ref).abs().max() < 1e-4
    # negative control: the size-based resize (timm / HF) is measurably different, so the test can fail
    assert (ref_depth(state, x, (2, 5, 8, 11), 12, pos="size") - ref).abs().max() > 1e-3


@pytest.mark.slow
@torch.no_grad()
def test_dav2_vitb_checkpoint_matches_reference_at_518(vitb_file):
    path, state = vitb_file
    net = build("dav2-vitb", path).eval()
    x = random_image(518, 518)
    ours, ref = net(x), ref_depth(state, x, (2, 5, 8, 11), 12)
    assert ref.std() > 1e-2 and (ours - ref).abs().max() < 1e-4


@torch.no_grad()
def test_dav1_vitb_loads_the_same_keys_and_feeds_the_last_four_blocks(vitb_file):
    path, state = vitb_file
    x = random_image(154, 210)
    dav1 = build("dav1-vitb", path).eval()(x)
    assert (dav1 - ref_depth(state, x, (8, 9, 10, 11), 12)).abs().max() < 1e-4
    assert (dav1 - ref_depth(state, x, (2, 5, 8, 11), 12)).abs().max() > 1e-2  # not DAv2's blocks


def test_wrappers_prefixes_and_safetensors_load_the_same_weights(tmp_path, tiny_state):
    wrapped = {"model": {f"module.{k}": v for k, v in tiny_state.items()}}
    torch.save(wrapped, tmp_path / "a.pt")
    torch.save({"state_dict": tiny_state}, tmp_path / "b.pth")
    save_file(tiny_state, str(tmp_path / "c.safetensors"))
    for name in ("a.pt", "b.pth", "c.safetensors"):
        loaded = build("tiny", tmp_path / name).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in tiny_state.items()), name


def test_missing_and_misshaped_keys_fail_naming_both(tmp_path, tiny_state):
    del tiny_state["pretrained.blocks.1.ls2.gamma"]
    tiny_state["depth_head.projects.2.weight"] = torch.zeros(7, 64, 1, 1)
    path = tmp_path / "broken.pth"
    torch.save(tiny_state, path)
    with pytest.raises(CheckpointError) as e:
        build("tiny", path)
    msg = str(e.value)
    assert str(path) in msg and "pretrained.blocks.1.ls2.gamma" in msg and "depth_head.projects.2.weight" in msg
    assert "missing" in msg and "mis-shaped" in msg and "\n" not in msg


def test_unexpected_key_and_unreadable_file_fail(tmp_path, tiny_state):
    tiny_state["pretrained.head.weight"] = torch.zeros(3)
    torch.save(tiny_state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected \[pretrained.head.weight\]"):
        build("tiny", tmp_path / "extra.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth: cannot read"):
        build("tiny", tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not found"):
        build("tiny", tmp_path / "absent.pth")


# --- wiring into build_model --------------------------------------------------------------------------------------

def test_build_model_loads_backbone_and_initialises_seg_head_from_depth_head(tmp_path, tiny_state):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_state, path)
    model = build_model(load_config(None, TINY + [f"model.backbone.checkpoint={path}"]).model)
    state = model.state_dict()
    for k, v in tiny_state.items():
        assert torch.equal(state[k], v), k
    seg = model.seg_head.state_dict()
    skipped = {k.removeprefix("depth_head.") for k in tiny_state if ".refinenet4.resConfUnit1." in k}
    assert len(skipped) == 4 and not skipped & set(seg)
    for k, v in seg.items():
        assert torch.equal(v, tiny_state[f"depth_head.{k}"]), k
    assert not any(p.requires_grad for p in model.depth_head.parameters())
    assert all(p.requires_grad for p in model.seg_head.parameters())
    # without a checkpoint the decoders are independent random initialisations
    fresh = build_model(load_config(None, TINY).model)
    assert not torch.equal(fresh.seg_head.scratch.output_conv1.weight, fresh.depth_head.scratch.output_conv1.weight)


# --- HF-format Depth Anything directory -----------------------------------------------------------------------------

def _hf_model(image_size: int = 112):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(image_size=image_size, patch_size=14, hidden_size=32, num_hidden_layers=6,
                            num_attention_heads=2, out_indices=[2, 3, 5, 6], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                                 neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16)
    model = randomize_(DepthAnythingForDepthEstimation(config).eval(), seed=5)
    with torch.no_grad():
        model.head.conv3.bias.fill_(1.0)  # keep the final ReLU mostly active
    return model


@torch.no_grad()
def test_hf_directory_converts_and_matches_transformers(tmp_path):
    from ois_lightning.model.hf_depth_anything import spec_from_config

    hf = _hf_model()
    hf.save_pretrained(tmp_path)
    spec = spec_from_config(tmp_path)
    assert spec.out_indices == (1, 2, 4, 5) and spec.pretrain_grid == 8  # HF stage i = block i-1
    net = build(spec, tmp_path).eval()
    x = random_image(112, 112)
    ref = hf(pixel_values=x).predicted_depth[:, None]
    assert ref.std() > 1e-2 and (net(x) - ref).abs().max() < 1e-4
    with pytest.raises(CheckpointError, match=r"config.json: not the network of 'dav2-vitb'.*embed_dim 32"):
        build("dav2-vitb", tmp_path)


# --- MAE (its layouts and 1024 forward: test_backbone_fidelity.py) ----------------------------------------------

def test_mae_without_depth_source_is_a_config_error():
    with pytest.raises(ConfigError, match="mae-vitb has no depth head"):
        load_config(None, TINY + ["model.backbone.name=mae-vitb", "model.input_size=128"])
    cfg = load_config(None, TINY + ["model.backbone.name=mae-vitb", "model.input_size=128", "data.depth.source=gt",
                                    "model.backbone.random_init=true"])
    assert build_model(cfg.model).depth_head is None


# --- a separate depth model at run time (data.depth.model, source=model) -------------------------------------------

@torch.no_grad()
def test_separate_depth_model_replaces_the_depth_head(tmp_path):
    from ois_lightning.model.order import normalize_depth

    path = tmp_path / "dav2_vits.pth"
    torch.save(random_state(official_shapes(dim=384, depth=12, features=64, out=(48, 96, 192, 384)), seed=4), path)
    cfg = load_config(None, TINY + ["model.backbone.name=mae-vitb", "model.input_size=128",
                                    "data.depth.model=dav2-vits", f"data.depth.checkpoint={path}",
                                    "model.backbone.random_init=true"])
    assert build_model(cfg.model).depth_model is None  # without data.depth the network has no depth source
    model = build_model(cfg.model, cfg.data.depth).eval()
    assert model.depth_model is not None and model.depth_model.kind == "disparity"
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        enc = model.encode(image)
        # the depth model runs as Depth Anything's infer_image does (518 x 518) and is resized back to 128 x 128
        assert torch.allclose(enc.depth, normalize_depth(model.depth_model(image)))
        assert enc.depth.shape == (1, 1, 128, 128) and enc.depth.std() > 1e-2
    assert not any(p.requires_grad for p in model.depth_model.parameters())
    model.train()
    assert not model.depth_model.training
