"""The onnxruntime loop of docs/export.md, fed by export.json alone, gives `ois eval`'s masks: the protocol's clicks
on its own masks reproduce results.json's IoU after every click, for a stretch (paper) and a letterbox checkpoint
on a non-square image; the graphs' letterbox size rule is albumentations'."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from ois_lightning import Predictor
from ois_lightning.cli import main
from ois_lightning.data import Sample
from ois_lightning.protocol.clicks import Clicker, iou
from ois_lightning.protocol.geometry import Letterbox, letterbox_content
from ois_lightning.protocol.predictor import click_arrays

from .helpers import REPO, save_checkpoint

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
H, W, CLICKS = 90, 130, 6
MARKER = "<!-- the block below is executed by tests/test_export_loop.py -->"


def docs_loop() -> dict:
    """The names the tested code block of docs/export.md defines."""
    text = (REPO / "docs" / "export.md").read_text()
    block = re.search(re.escape(MARKER) + r"\n```python\n(.*?)\n```", text, re.S)
    assert block, f"docs/export.md: no python block after {MARKER}"
    names: dict = {}
    exec(compile(block.group(1), "docs/export.md", "exec"), names)
    return names


def _scene(root) -> np.ndarray:
    """A 90 x 130 image with one object in the layout of the folder dataset; returns the object's mask."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    gt = np.zeros((H, W), bool)
    gt[15:70, 30:95] = True
    image[gt] = (220, 60, 40)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(image).save(root / "images" / "scene.png")
    Image.fromarray(gt.astype(np.uint8) * 255).save(root / "masks" / "scene.png")
    return image


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_docs_loop_reproduces_ois_eval(resize, tmp_path):
    image = _scene(tmp_path / "data")
    ckpt = save_checkpoint(tmp_path / "m.ckpt", "data.depth.source=model", f"eval.resize={resize}",
                           f"clicks.max_eval={CLICKS}", randomize=7)
    data = ["data.test=[folder]", f"data.paths={{folder: {tmp_path / 'data'}}}", "logger.kind=none"]
    assert main(["eval", "--ckpt", str(ckpt), f"output_dir={tmp_path / 'eval'}", *data]) == 0
    expected = json.loads((tmp_path / "eval" / "results.json").read_text())["per_object"]["ious"][0]
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "onnx")]) == 0
    manifest = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert manifest["preprocess"]["resize"] == resize and manifest["protocol"]["not_in_graphs"] == []
    predictor = docs_loop()["OnnxPredictor"](tmp_path / "onnx")
    predictor.set_image(image)
    torch_predictor = Predictor.from_checkpoint(ckpt, device="cpu")  # ois eval's engine, for the masks themselves
    torch_predictor.set_image(image)
    gt = np.asarray(Image.open(tmp_path / "data" / "masks" / "scene.png")) > 0
    clicker, mask, prev, curve = Clicker(gt.astype(np.int8)), np.zeros((H, W), bool), None, []
    for _ in expected:
        clicker.next_click(mask)
        points, labels = click_arrays(clicker.clicks)
        mask, prob = predictor.predict(points.tolist(), labels.tolist(), prev)
        want_mask, want_prob = torch_predictor.predict(points, labels, prev)
        assert mask.shape == prob.shape == (H, W) and 0.02 < mask.mean() < 0.98
        np.testing.assert_allclose(prob, want_prob, atol=1e-4)
        assert (mask == want_mask).mean() > 0.999
        prev = mask
        curve.append(iou(gt, mask))
    assert len(set(expected)) > 1  # the clicks steer the masks
    np.testing.assert_allclose(curve, expected, atol=1e-3)


def test_letterbox_content_in_the_graph_is_albumentations():
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (1, 700), (700, 1), (112, 112), (333, 500), (57, 113), (113, 57)]
    sizes += [tuple(int(v) for v in rng.integers(1, 1200, 2)) for _ in range(60)]
    for h, w in sizes:
        sample = Sample(np.zeros((h, w, 3), np.uint8), np.zeros((0, h, w), np.int8), None, "x")
        mapping, _, _ = Letterbox.inputs(sample, 112, torch.device("cpu"), False)
        assert tuple(letterbox_content(torch.tensor([h, w]), 112).tolist()) == mapping.content, (h, w)


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
def test_raw_depth_rule_of_the_manifest_is_what_ois_eval_feeds(resize):
    """export.json's ``raw_depth`` rule, followed as written (cv2 INTER_LINEAR into the top-left of zeros; bilinear
    with half-pixel centres), gives the depth input the Predictor builds for `ois eval` on a non-square image."""
    import cv2
    import torch.nn.functional as F

    from ois_lightning.protocol.geometry import Stretch
    from ois_lightning.tools.export_manifest import preprocess

    rng = np.random.default_rng(5)
    depth = (rng.random((H, W)) * 10 + 0.5).astype(np.float32)
    sample = Sample(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), np.zeros((0, H, W), np.int8), depth, "x")
    rule = preprocess(resize, 112, 0.49, [0.0] * 3, [1.0] * 3, depth_input=True)["raw_depth"]
    _, _, fed = (Letterbox if resize == "letterbox" else Stretch).inputs(sample, 112, torch.device("cpu"), True)
    if resize == "letterbox":
        assert "cv2.INTER_LINEAR" in rule and "top-left into zeros" in rule
        h, w = round(H * (112 / max(H, W))), round(W * (112 / max(H, W)))
        want = np.zeros((112, 112), np.float32)
        want[:h, :w] = cv2.resize(depth, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        assert "bilinear to (S,S) as the image" in rule
        want = F.interpolate(torch.from_numpy(depth)[None, None], size=(112, 112), mode="bilinear",
                             align_corners=False)[0, 0].numpy()
    assert fed is not None and fed.shape == (1, 1, 112, 112)
    np.testing.assert_allclose(fed[0, 0].numpy(), want, rtol=1e-5, atol=1e-4)
