"""`ois export`: the ONNX graphs reproduce the PyTorch model under onnxruntime, for any number of clicks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ois_lightning.cli import main
from ois_lightning.config.schema import ConfigError
from ois_lightning.config.load import load_config
from ois_lightning.checkpoint import config_from_checkpoint, load_checkpoint
from ois_lightning.tools.export import example_inputs, export_onnx, graph_names, relative_error
from ois_lightning.model import build_model

from .helpers import TINY, save_checkpoint


ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny OIS model (order + object + dense + sparse, depth from its head) exported by `ois export`; its
    protocol has flip, which the graphs do not do."""
    tmp = tmp_path_factory.mktemp("export")
    save_checkpoint(tmp / "tiny.ckpt", "eval.flip=true")
    assert main(["export", "--ckpt", str(tmp / "tiny.ckpt"), "--out", str(tmp / "onnx")]) == 0
    return tmp / "tiny.ckpt", tmp / "onnx"


def test_graphs_match_pytorch_for_two_click_counts(exported):
    ckpt, out = exported
    model, cfg = load_checkpoint(ckpt)
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["click_inputs"] == ["coords", "labels", "prev_mask", "orig_im_size", "feat0", "feat1", "feat2",
                                        "feat3", "depth"]
    assert manifest["click_outputs"] == ["logits", "prob"] and manifest["preprocess"]["resize"] == "letterbox"
    assert "raw_depth" not in manifest["preprocess"] and manifest["protocol"]["not_in_graphs"] == ["eval.flip"]
    assert max(manifest["max_relative_error"].values()) < TOL
    encoder = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    click = ort.InferenceSession(str(out / "click.onnx"), providers=["CPUExecutionProvider"])
    assert [i.shape for i in click.get_inputs()][:2] == [[1, "clicks", 2], [1, "clicks"]]
    logits_by_k = []
    for k in (2, 9):  # neither is the click count the graph was traced with (3)
        x = example_inputs(cfg.model.input_size, k, depth_input=False, seed=10 + k)
        with torch.no_grad():
            enc = model.encode(x["image"])
            ref = model(enc, x["coords"], x["labels"], x["prev_mask"])
        feats = encoder.run(None, {"image": x["image"].numpy()})
        for want, got in zip([*enc.feats, enc.depth], feats):
            assert relative_error(want, got) < TOL
        feed = {n: x[n].numpy() for n in ("coords", "labels", "prev_mask", "orig_im_size")}
        feed |= dict(zip(["feat0", "feat1", "feat2", "feat3", "depth"], feats))
        logits, prob = click.run(["logits", "prob"], feed)
        assert logits.shape == (1, 1, 112, 112) and relative_error(ref, logits) < TOL
        assert prob.shape == (1, 1, *x["orig_im_size"].tolist())  # the original size, here landscape
        logits_by_k.append(logits)
    assert not np.allclose(*logits_by_k)  # the clicks reach the logits


def test_first_round_with_empty_mask_matches_no_previous_mask(exported):
    """Round 1 feeds prev_mask = 0, which the model treats as "no previous mask"."""
    ckpt, out = exported
    model, _ = load_checkpoint(ckpt)
    x = example_inputs(112, 1, depth_input=False, seed=3)
    encoder = ort.InferenceSession(str(out / "encoder.onnx"))
    click = ort.InferenceSession(str(out / "click.onnx"))
    feats = encoder.run(None, {"image": x["image"].numpy()})
    feed = {"coords": x["coords"].numpy(), "labels": x["labels"].numpy(),
            "prev_mask": np.zeros((1, 1, 112, 112), np.float32), "orig_im_size": x["orig_im_size"].numpy()}
    feed |= dict(zip(["feat0", "feat1", "feat2", "feat3", "depth"], feats))
    with torch.no_grad():
        ref = model(model.encode(x["image"]), x["coords"], x["labels"], None)
    assert relative_error(ref, click.run(None, feed)[0]) < TOL


def test_depth_from_files_is_an_encoder_input_and_models_without_depth_have_none(tmp_path):
    torch.manual_seed(0)
    cfg = load_config(None, TINY + ["model.dense.enabled=false"])
    model = build_model(cfg.model).eval()
    manifest = export_onnx(model, tmp_path / "gt", 112, depth_input=True)
    assert manifest["encoder_inputs"] == ["image", "raw_depth"] and manifest["encoder_outputs"][-1] == "depth"
    assert manifest["preprocess"]["raw_depth"].startswith("float32 (H,W) -> cv2.resize")  # letterbox's rule
    x = example_inputs(112, 4, depth_input=True, seed=1)
    encoder = ort.InferenceSession(str(tmp_path / "gt" / "encoder.onnx"))
    feats = encoder.run(None, {"image": x["image"].numpy(), "raw_depth": x["raw_depth"].numpy()})
    with torch.no_grad():
        enc = model.encode(x["image"], x["raw_depth"])
    assert relative_error(enc.depth, feats[-1]) < TOL
    click = ort.InferenceSession(str(tmp_path / "gt" / "click.onnx"))
    feed = {n: x[n].numpy() for n in ("coords", "labels", "prev_mask", "orig_im_size")}
    feed |= dict(zip(manifest["encoder_outputs"], feats))
    with torch.no_grad():
        assert relative_error(model(enc, x["coords"], x["labels"], x["prev_mask"]), click.run(None, feed)[0]) < TOL
    plain = build_model(load_config(None, TINY + ["model.order.enabled=false"]).model).eval()
    names = graph_names(plain, depth_input=False)  # a model without depth neither outputs nor reads one
    assert names["encoder_outputs"] == ["feat0", "feat1", "feat2", "feat3"] and "depth" not in names["click_inputs"]


def test_config_comes_from_the_checkpoint_or_from_config(tmp_path, capsys):
    save_checkpoint(tmp_path / "stored.ckpt", "clicks.threshold=0.3")
    cfg = config_from_checkpoint(tmp_path / "stored.ckpt", overrides=["clicks.max_eval=7"])
    assert (cfg.model.input_size, cfg.clicks.threshold, cfg.clicks.max_eval) == (112, 0.3, 7)
    with pytest.raises(ConfigError, match="clicks.nope"):
        config_from_checkpoint(tmp_path / "stored.ckpt", overrides=["clicks.nope=1"])
    save_checkpoint(tmp_path / "bare.ckpt", stored_config=False)
    with pytest.raises(ConfigError, match="--config"):
        config_from_checkpoint(tmp_path / "bare.ckpt")
    assert main(["export", "--ckpt", str(tmp_path / "bare.ckpt"), "--out", str(tmp_path)]) == 2
    assert "--config" in capsys.readouterr().err
    cfg = config_from_checkpoint(tmp_path / "bare.ckpt", _tiny_yaml(tmp_path))
    assert cfg.model.input_size == 112 and cfg.model.backbone.checkpoint is None


def _tiny_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("model:\n  backbone: {name: tiny}\n  input_size: 112\n"
                    "  sparse: {dim: 32, num_heads: 4, ffn_dim: 64}\n")
    return path
