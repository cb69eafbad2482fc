"""The public Predictor on raw arrays (``from ois_lightning import Predictor``): rebuilt from a checkpoint alone, it
reproduces `ois eval`'s curves; batched prediction, order maps, attention, input errors and examples/predict.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ois_lightning import Predictor
from ois_lightning.cli import main
from ois_lightning.protocol.clicks import Clicker, iou
from ois_lightning.config.schema import ConfigError
from ois_lightning.data.splits import build_split
from ois_lightning.model.checkpoints import CheckpointError
from ois_lightning.protocol.predictor import click_arrays

from .helpers import REPO, TINY, run_warm, save_checkpoint


ROW_CONFIGS = sorted(p for p in (REPO / "experiments").glob("table*/*.yaml") if p.name != "table.yaml")
# tiny model on generated layered scenes with their exact depth, one object, the protocol's 20 clicks
TINY_ROW = TINY + ["data.test=[layered]", "data.depth.source=gt", "data.depth.model=null", "data.layered.size=112",
                   "data.layered.test_length=1", "eval.max_objects=1", "clicks.max_eval=20", "logger.kind=none",
                   "train.accelerator=cpu"]
SCENES = TINY + ["data.depth.source=gt", "data.layered.size=112"]
EXAMPLE = REPO / "examples" / "predict.py"


def drive(predictor: Predictor, gt: np.ndarray, clicks: int = 20) -> list[float]:
    """The protocol through the public API: the Clicker's clicks as arrays, IoU after each round."""
    clicker, mask, prev, curve = Clicker(gt), np.zeros(gt.shape, bool), None, []
    for _ in range(clicks):
        clicker.next_click(mask)
        mask, prob = predictor.predict(*click_arrays(clicker.clicks), prev)
        assert mask.dtype == bool and prob.dtype == np.float32 and prob.shape == gt.shape
        prev = mask
        curve.append(iou(gt, mask))
    return curve


@pytest.mark.parametrize("config", ROW_CONFIGS + ["zoom_flip"],
                         ids=[f"{p.parent.name}/{p.stem}" for p in ROW_CONFIGS] + ["table4/full+zoom_in+flip"])
def test_from_checkpoint_reproduces_ois_eval_exactly(config, tmp_path, random_weights):
    extra = ["eval.zoom_in=true", "eval.zoom_in_size=56", "eval.flip=true"] if config == "zoom_flip" else []
    row = REPO / "experiments/table4/full.yaml" if config == "zoom_flip" else config
    ckpt = save_checkpoint(tmp_path / "row.ckpt", *TINY_ROW, *extra, config=str(row))
    assert main(["eval", "--ckpt", str(ckpt), f"output_dir={tmp_path / 'eval'}"]) == 0  # no config file
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    assert not predictor.model.training and predictor.input_size == 112
    sample = build_split(predictor.config, "layered", "test")[0]
    predictor.set_image(sample.image, sample.depth)
    assert results["per_object"]["ids"] == [f"{sample.id}#0"]
    assert drive(predictor, sample.masks[0]) == results["per_object"]["ious"][0]


@pytest.fixture(scope="module")
def scene_predictor(tmp_path_factory) -> tuple[Predictor, object]:
    """Full OIS (order + object + dense + sparse) on a layered scene with 3 objects."""
    ckpt = save_checkpoint(tmp_path_factory.mktemp("api") / "full.ckpt", *SCENES)
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    sample = build_split(predictor.config, "layered", "test")[0]
    assert len(sample.masks) >= 2
    predictor.set_image(sample.image, sample.depth)
    return predictor, sample


def _object_clicks(sample, rounds: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(points, labels, previous mask) after ``rounds`` Clicker rounds of each object (numbers of clicks differ)."""
    out = []
    for k, gt in enumerate(sample.masks):
        clicker, mask = Clicker(gt), np.zeros(gt.shape, bool)
        for _ in range(rounds + k):
            clicker.next_click(mask)
            mask = np.roll(gt == 1, 3, axis=1)  # a stand-in previous prediction, off by 3 px
        out.append((*click_arrays(clicker.clicks), mask))
    return out


@pytest.mark.parametrize("flip", [False, True])
def test_predict_batch_equals_one_by_one_in_one_decoder_call(scene_predictor, flip, monkeypatch):
    predictor, sample = scene_predictor
    monkeypatch.setattr(predictor, "flip", flip)
    predictor.set_image(sample.image, sample.depth)
    objects = _object_clicks(sample, 2)
    single = [predictor.predict(p, lab, m) for p, lab, m in objects]
    calls = []
    forward = predictor.model.forward
    monkeypatch.setattr(predictor.model, "forward", lambda *a, **k: calls.append(a[1].shape) or forward(*a, **k))
    masks, probs = predictor.predict_batch(*map(list, zip(*objects)))
    assert calls == [((2 if flip else 1) * len(objects), 2 + len(objects) - 1, 2)]  # B objects, padded K
    for (mask, prob), m, p in zip(single, masks, probs):
        np.testing.assert_allclose(p, prob, atol=1e-5)
        assert (m == mask).mean() > 0.999 and m.dtype == bool
    mixed = [None] + [m for _, _, m in objects[1:]]  # only some previous masks: one predict per object
    masks, _ = predictor.predict_batch([p for p, _, _ in objects], [lab for _, lab, _ in objects], mixed)
    assert np.array_equal(masks[0], predictor.predict(objects[0][0], objects[0][1])[0])


def test_order_map_and_attention_in_the_original_frame(scene_predictor):
    predictor, sample = scene_predictor
    predictor.set_image(sample.image, sample.depth)
    h, w = sample.image.shape[:2]
    (p0, _, _), (p1, _, _) = _object_clicks(sample, 1)[:2]
    points, labels = np.concatenate([p0[:1], p1[:1], [[5, 7]]]), np.array([1, 0, 0])  # objects' centres, a corner
    maps = predictor.order_map(points, labels)
    assert set(maps) == {"positive", "negatives", "depth"} and len(maps["negatives"]) == 2
    for m in [maps["positive"], *maps["negatives"], maps["depth"]]:
        assert m.shape == (h, w) and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1 + 1e-6
    for m, (y, x) in zip([maps["positive"], *maps["negatives"]], points):
        assert m[y, x] < 0.05 < m.max()  # Eq. 1-2: |R - R(click)| vanishes at the click
    assert maps["depth"].max() > 0.9 and maps["depth"].min() < 0.1  # min-max normalised
    assert predictor.order_map(points[1:], labels[1:])["positive"] is None
    weights = predictor.attention(points, labels, block=1)
    assert len(weights["before"]) == len(weights["after"]) == 3
    for before, after in zip(weights["before"], weights["after"]):
        assert before.shape == after.shape == (h, w) and before.min() >= 0
        assert not np.allclose(before, after, atol=1e-6)  # the order bias moves the attention


def test_bad_inputs_are_one_line_errors(scene_predictor, tmp_path):
    predictor, sample = scene_predictor
    h, w = sample.image.shape[:2]
    image, pts, lab = sample.image, np.array([[10, 12]]), np.array([1])

    def fails(call, match: str) -> None:
        with pytest.raises(ValueError, match=match) as e:
            call()
        assert "\n" not in str(e.value)

    fails(lambda: predictor.set_image(image.astype(np.float32)), "uint8 RGB array, got float32")
    fails(lambda: predictor.set_image(image[..., 0]), r"\(H,W,3\) uint8")
    fails(lambda: predictor.set_image(image), "data.depth.source file or gt")  # this model reads gt depth
    fails(lambda: predictor.set_image(image, np.zeros((h, w + 1))), f"real \\({h},{w}\\) array")
    fails(lambda: predictor.predict(np.array([10, 12]), lab), r"\(K,2\) array")
    fails(lambda: predictor.predict(pts, np.array([2])), "1 \\(positive\\) / 0 \\(negative\\)")
    fails(lambda: predictor.predict(pts, np.array([1, 0])), r"a \(1,\) array")
    fails(lambda: predictor.predict(np.array([[h, 0]]), lab), f"outside the image \\(height {h}, width {w}")
    fails(lambda: predictor.predict(pts, lab, np.zeros((h, w), np.uint8)), "bool")
    fails(lambda: predictor.predict_batch([pts], [lab, lab]), "one of each per object")
    bare = save_checkpoint(tmp_path / "bare.ckpt", stored_config=False)
    fresh_ckpt = save_checkpoint(tmp_path / "fresh.ckpt", *SCENES)
    fresh_bytes = fresh_ckpt.read_bytes()
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pth")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    (tmp_path / "text.ckpt").write_text("text that the unpickler would read as opcodes\n")  # was an IndexError
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "cut.ckpt").write_bytes(fresh_bytes[: len(fresh_bytes) // 2])
    for path, match in ((bare, "stores no config"), (tmp_path / "plain.pth", "no 'state_dict'"),
                        (tmp_path / "junk.ckpt", r"not a PyTorch checkpoint \(starts with b'not '\)"),
                        (tmp_path / "text.ckpt", "not a PyTorch checkpoint"),
                        (tmp_path / "empty.ckpt", "cannot read the file"), (tmp_path / "cut.ckpt", "cannot read")):
        with pytest.raises(CheckpointError, match=match) as e:
            Predictor.from_checkpoint(path)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="clicks.nope"):  # a bad override is the caller's config error
        Predictor.from_checkpoint(fresh_ckpt, overrides=["clicks.nope=1"])
    fresh = Predictor.from_checkpoint(fresh_ckpt)
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(pts, lab)


def test_package_import_stays_light():
    code = "import sys; from ois_lightning import Predictor; assert 'lightning' not in sys.modules, 'lightning'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=300)


def test_ois_eval_needs_a_config_or_a_checkpoint(capsys):
    assert main(["eval"]) == 2
    assert "--ckpt PATH" in capsys.readouterr().err


def _run_example(*args: str) -> subprocess.CompletedProcess:
    proc = run_warm([sys.executable, str(EXAMPLE), *args])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def example_ckpt(tmp_path_factory) -> Path:
    """A tiny model that predicts its own depth (its depth head): the example passes no depth map."""
    return save_checkpoint(tmp_path_factory.mktemp("example") / "tiny.ckpt", "data.depth.source=model")


def test_example_segments_a_generated_image(example_ckpt, tmp_path):
    assert len(EXAMPLE.read_text().splitlines()) < 40
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (90, 130, 3), dtype=np.uint8)
    image[30:60, 40:90] = (250, 20, 20)
    Image.fromarray(image).save(tmp_path / "scene.png")
    proc = _run_example(str(example_ckpt), str(tmp_path / "scene.png"), "--out", str(tmp_path / "mask.png"))
    mask = np.asarray(Image.open(tmp_path / "mask.png"))
    assert mask.shape == (90, 130) and set(np.unique(mask)) <= {0, 255}
    assert "scene.png" in proc.stdout and str(tmp_path / "mask.png") in proc.stdout


def test_example_default_image_is_from_grabcut(example_ckpt, grabcut_root, tmp_path):
    first = sorted((grabcut_root / "data_GT").glob("*.jpg"))[0]
    proc = _run_example(str(example_ckpt), "--out", str(tmp_path / "gc.png"))
    assert first.name in proc.stdout
    assert np.asarray(Image.open(tmp_path / "gc.png")).shape == np.asarray(Image.open(first)).shape[:2]
