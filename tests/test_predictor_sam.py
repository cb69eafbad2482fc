"""SAM's call on the Predictor: ``predict(point_coords=(x, y), point_labels, mask_input=logits)`` is the same click
round as ``predict((y, x), labels, prev_mask)``; reset_image / get_image_embedding; clicks outside the image and
mixed calls are refused; a checkpoint that reads depth files says how to give depth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ois_lightning import Predictor

from .helpers import save_checkpoint
from .test_predictor_api import SCENES

H, W = 90, 130  # not square: a swapped (x, y) lands elsewhere (or outside)
POINTS = np.array([[20, 100], [70, 15], [45, 60]])  # (y, x)
LABELS = np.array([1, 0, 1])
PROTOCOLS = {"letterbox": ["eval.resize=letterbox"], "stretch": ["eval.resize=stretch"],
             "stretch+zoom_in+flip": ["eval.resize=stretch", "eval.zoom_in=true", "eval.zoom_in_size=56",
                                      "eval.flip=true"]}


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    image[10:60, 70:120] = (240, 30, 30)
    return image


@pytest.fixture(scope="module", params=list(PROTOCOLS))
def predictor(request, tmp_path_factory) -> Predictor:
    """A tiny model that predicts its own depth, under one evaluation protocol, on a 90 x 130 image."""
    ckpt = save_checkpoint(tmp_path_factory.mktemp("sam") / "m.ckpt", "data.depth.source=model",
                           *PROTOCOLS[request.param], randomize=2)
    p = Predictor.from_checkpoint(ckpt, device="cpu")
    p.set_image(_image())
    return p


def _yx_rounds(predictor: Predictor) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mask, prob) after each click of POINTS, the (y, x) call fed the previous mask (zoom-in follows it)."""
    rounds, prev = [], None
    for k in range(1, len(POINTS) + 1):
        rounds.append(predictor.predict(POINTS[:k], LABELS[:k], prev))
        prev = rounds[-1][0]
    return rounds


def test_sam_call_is_the_yx_call_round_by_round(predictor):
    expected = _yx_rounds(predictor)
    logits = None
    for k, (mask, prob) in enumerate(expected, 1):  # SAM's loop: every click so far, the previous logits
        masks, scores, logits = predictor.predict(point_coords=POINTS[:k, ::-1].tolist(),
                                                  point_labels=LABELS[:k].tolist(), mask_input=logits)
        assert masks.shape == logits.shape == (1, H, W) and masks.dtype == bool and logits.dtype == np.float32
        assert np.array_equal(masks[0], mask) and mask.any() and not mask.all()
        assert scores.shape == (1,) and scores.dtype == np.float32
        assert scores[0] == pytest.approx(prob[mask].mean(), rel=1e-6) and predictor.threshold < scores[0] <= 1
        np.testing.assert_allclose(torch.sigmoid(torch.from_numpy(logits[0])).numpy(), prob, atol=1e-6)
        logits = logits[0] if k == 2 else logits  # (H,W) is accepted as well as (1,H,W)


def test_return_logits_and_multimask_output(predictor):
    call = dict(point_coords=POINTS[:1, ::-1], point_labels=LABELS[:1])
    masks, scores, logits = predictor.predict(**call)
    as_logits, scores_l, logits_l = predictor.predict(**call, return_logits=True, multimask_output=False)
    assert as_logits.dtype == np.float32 and np.array_equal(as_logits, logits) and np.array_equal(logits_l, logits)
    assert np.array_equal(scores_l, scores)
    many, _, _ = predictor.predict(**call, multimask_output=True)  # OIS decodes one mask: C = 1 either way
    assert many.shape == (1, H, W) and np.array_equal(many, masks)


def test_swapped_and_outside_clicks(predictor):
    swapped, _, _ = predictor.predict(point_coords=POINTS[2:], point_labels=LABELS[2:])  # (y, x) read as (x, y)
    assert not np.array_equal(swapped[0], predictor.predict(POINTS[2:], LABELS[2:])[0])
    with pytest.raises(ValueError, match=r"point_coords: click 0 at \(x, y\) = \(20, 100\) lies outside the image "
                                         r"\(height 90, width 130"):
        predictor.predict(point_coords=POINTS[:1], point_labels=LABELS[:1])  # y = 100 >= H
    with pytest.raises(ValueError, match=r"points: click 1 at \(y, x\) = \(20, 130\) lies outside"):
        predictor.predict(np.array([[20, 100], [20, 130]]), np.array([1, 0]))  # x = 130 >= W


def test_bad_sam_calls_are_one_line_errors(predictor):
    h, w = H, W
    for call, match in (
            (dict(point_coords=[[10, 10]]), r"point_labels: expected a \(1,\) array"),
            (dict(point_coords=[[10, 10]], point_labels=[2]), "1 \\(positive\\) / 0 \\(negative\\)"),
            (dict(point_coords=[[10, 10]], point_labels=[1], box=np.array([0, 0, 5, 5])), "box: OIS takes clicks"),
            (dict(point_coords=[[10, 10]], point_labels=[1], mask_input=np.zeros((1, 256, 256), np.float32)),
             f"mask_input: expected None or float logits of shape \\(1,{h},{w}\\)"),
            (dict(point_coords=[[10, 10]], point_labels=[1], mask_input=np.zeros((h, w), bool)), "got bool array"),
            (dict(points=POINTS, labels=LABELS, mask_input=np.zeros((h, w), np.float32)),
             "mask_input belong to SAM's call"),
            (dict(points=POINTS, labels=LABELS, point_coords=POINTS), "point_coords belong to SAM's call"),
            ({}, r"point_coords: expected a \(K,2\) array of \(x, y\) pixels")):
        with pytest.raises(ValueError, match=match) as e:
            predictor.predict(**call)
        assert "\n" not in str(e.value)


def test_reset_image_and_get_image_embedding(predictor):
    before = predictor.predict(POINTS[:1], LABELS[:1])[1]
    enc = predictor.get_image_embedding()
    views = 2 if predictor.flip else 1
    assert predictor.is_image_set and len(enc.feats) == 4 and enc.feats[-1].shape[0] == views
    assert enc.depth is not None and enc.depth.shape == (views, 1, 112, 112)
    predictor.reset_image()
    assert not predictor.is_image_set and predictor.original_size == (0, 0)
    for call in (predictor.get_image_embedding, lambda: predictor.predict(POINTS[:1], LABELS[:1]),
                 lambda: predictor.predict(point_coords=[[5, 5]], point_labels=[1])):
        with pytest.raises(RuntimeError, match="call set_image"):
            call()
    predictor.set_image(_image())
    assert np.array_equal(predictor.predict(POINTS[:1], LABELS[:1])[1], before)


def test_a_checkpoint_reading_depth_files_says_how_to_give_depth(tmp_path):
    ckpt = save_checkpoint(tmp_path / "gt.ckpt", *SCENES)  # data.depth.source=gt; the tiny backbone has a head
    with pytest.warns(UserWarning, match=r"reads depth from data \(data.depth.source=gt\): pass "
                                         r"set_image\(image, depth=D\).*overrides=\['data.depth.source=model'\]") as w:
        predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    assert "\n" not in str(w[0].message)
    with pytest.raises(ValueError, match=r"depth: this model reads depth from data .*data.depth.source=model"):
        predictor.set_image(_image())
    predictor.set_image(_image(), depth=np.linspace(0, 1, H * W).reshape(H, W))
    with_file_depth = predictor.predict(POINTS[:1], LABELS[:1])[1]
    own = Predictor.from_checkpoint(ckpt, device="cpu", overrides=["data.depth.source=model"])  # no warning
    assert not own.depth_from_sample
    own.set_image(_image())  # its depth head predicts the depth
    assert own.get_image_embedding().depth is not None
    assert not np.allclose(own.predict(POINTS[:1], LABELS[:1])[1], with_file_depth)
