"""Table 5's DepthEncoder baseline: depth through an extra trainable encoder, added to the image features."""
from __future__ import annotations

import pytest
import torch

from ois_lightning.config.schema import ConfigError
from ois_lightning.config.load import load_config
from ois_lightning.model import build_model
from ois_lightning.model.order import normalize_depth

from .helpers import TINY


ON = ["model.depth_encoder.enabled=true", "model.order.enabled=false", "model.depth_encoder.dim=32",
      "model.depth_encoder.num_heads=4", "model.depth_encoder.num_blocks=2"]


def _model():
    torch.manual_seed(0)
    return build_model(load_config(None, TINY + ON).model).eval()


def test_depth_encoder_requires_order_attention_off():
    with pytest.raises(ConfigError, match="model.order.enabled=false"):
        load_config(None, TINY + ["model.depth_encoder.enabled=true"])
    assert build_model(load_config(None, TINY + ["model.order.enabled=false"]).model).depth_encoder is None


def test_depth_encoder_starts_as_the_image_only_network_then_uses_depth():
    model = _model()
    assert model.uses_depth and model.order_mode is None and model.depth_encoder is not None
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 112, 112, generator=g)
    d1, d2 = torch.rand(1, 1, 112, 112, generator=g), torch.rand(1, 1, 112, 112, generator=g)
    with torch.no_grad():
        base = model.pretrained((image - model.mean) / model.std)
        enc1 = model.encode(image, d1)
        assert all(torch.equal(a, b) for a, b in zip(enc1.feats, base))  # zero-initialised projection
        assert torch.allclose(enc1.depth, normalize_depth(d1))
        torch.nn.init.normal_(model.depth_encoder.proj.weight, std=0.1)
        enc1, enc2 = model.encode(image, d1), model.encode(image, d2)
    assert (enc1.feats[0] - enc2.feats[0]).abs().max() > 1e-3  # the features now depend on the depth map
    coords, labels = torch.tensor([[[50.0, 50.0]]]), torch.tensor([[1]])
    with torch.no_grad():
        assert (model(enc1, coords, labels) - model(enc2, coords, labels)).abs().max() > 1e-4


def test_depth_encoder_is_trained():
    model = _model().train()
    torch.nn.init.normal_(model.depth_encoder.proj.weight, std=0.1)
    image = torch.rand(2, 3, 112, 112)
    enc = model.encode(image)  # depth from the frozen depth head
    assert enc.depth is not None
    model(enc, torch.tensor([[[50.0, 50.0]]] * 2), torch.tensor([[1]] * 2)).mean().backward()
    grads = [p.grad for p in model.depth_encoder.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in model.pretrained.parameters())
