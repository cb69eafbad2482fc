"""The selectable evaluation protocols: stretch (SegNext), zoom-in and flip (RITM / SimpleClick), skipped samples."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from ois_lightning.protocol.clicks import Click
from ois_lightning.config.schema import ConfigError
from ois_lightning.config.load import load_config
from ois_lightning.data import Sample
from ois_lightning.protocol.geometry import Crop, Stretch, mirror
from ois_lightning.protocol.evaluate import Predictor, evaluate
from ois_lightning.protocol.report import write_results
from ois_lightning.model import ImageEncoding, build_model
from ois_lightning.protocol.zoom_in import Box, View, ZoomIn, box_iou, clamp, expand, holds_positives, object_box

from .helpers import REPO, TINY


TINY_YAML = str(REPO / "experiments" / "tiny.yaml")


def _sig(x) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


# ------------------------------------------------------------------------------------------------ stretch
def test_stretch_maps_clicks_with_segnext_rounding():
    s = Stretch((3, 5), 10)  # H=3, W=5 -> 10 x 10
    assert [s.to_input(y, 0)[0] for y in range(3)] == [0, 3, 7]  # int(y * 10/3 + 0.5)
    assert [s.to_input(0, x)[1] for x in range(5)] == [0, 2, 4, 6, 8]  # int(x * 2 + 0.5)
    assert s.content == (10, 10)
    assert [Stretch((3, 4), 10).to_input(0, x)[1] for x in (1, 3)] == [3, 8]  # 2.5, 7.5 round half up, not to even


def test_stretch_rounds_clicks_in_float32_as_segnext():
    """SegNext maps clicks as ``int(points * (S / H) + 0.5)`` on an int64 tensor (float32 arithmetic). Ours equals
    that for every row of sides 100-700 at 448 and 1036 px; float64 differs on 1.4% of the rows of a 640 px side at
    448 px (COCO_MVal's images are mostly 640 px on a side: 1.24% of its pixels)."""
    for size in (448, 1036):
        for h in range(100, 701):
            reference = (torch.arange(h) * (size / h) + 0.5).int().tolist()
            assert [int(Stretch((h, h), size).to_input(y, 0)[0]) for y in range(h)] == reference, (size, h)
    float64 = [int(y * (448 / 640) + 0.5) for y in range(640)]
    ours = [int(Stretch((640, 640), 448).to_input(y, 0)[0]) for y in range(640)]
    assert sum(a != b for a, b in zip(float64, ours)) == 9  # 1.4% of 640


def test_stretch_resizes_logits_back_and_the_previous_mask_in():
    s = Stretch((3, 5), 10)
    ramp = torch.arange(10.0).expand(1, 1, 10, 10)  # logit = input column
    prob = s.to_original(ramp)
    assert prob.shape == (1, 1, 3, 5)
    # bilinear, align_corners=False, 10 -> 5 columns: column j samples input column 2j + 0.5
    np.testing.assert_allclose(prob[0, 0].numpy(), np.tile(_sig([0.5, 2.5, 4.5, 6.5, 8.5]), (3, 1)), rtol=1e-6)
    prev = np.zeros((3, 5), bool)
    prev[1] = True
    rows = s.mask(prev)[0, 0].numpy().max(1)  # nearest, pixel centres: input row i <- floor((i + 0.5) * 0.3)
    assert rows.tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]


def test_stretch_inputs_resize_image_and_depth_alike():
    rng = np.random.default_rng(0)
    depth = rng.random((3, 5)).astype(np.float32)
    sample = Sample(np.repeat((depth * 255).astype(np.uint8)[..., None], 3, 2), np.zeros((0, 3, 5), np.int8),
                    depth, "x/0")
    mapping, image, d = Stretch.inputs(sample, 10, torch.device("cpu"), with_depth=True)
    assert image.shape == (1, 3, 10, 10) and d.shape == (1, 1, 10, 10)
    expected = torch.nn.functional.interpolate(torch.from_numpy(depth)[None, None], size=(10, 10), mode="bilinear",
                                               align_corners=False)
    assert torch.equal(d, expected)
    torch.testing.assert_close(image[:, :1], torch.nn.functional.interpolate(
        torch.from_numpy(sample.image[..., 0]).float()[None, None] / 255.0, size=(10, 10), mode="bilinear"))


# ------------------------------------------------------------------------------------------------ zoom-in rule
def test_box_expansion_min_size_rounding_and_clamping():
    # 10x10 box: 1.4x = 14 < 200, so each side is 200 about the centre (14.5, 34.5); ends round half to even
    assert expand(Box(10, 19, 30, 39), 1.4, 200) == Box(-86, 114, -66, 134)
    assert clamp(Box(-86, 114, -66, 134), 100, 300) == Box(0, 99, 0, 134)  # cut, not shifted
    # 300 x 100: rows 1.4 * 300 = 420 about 149.5 -> -60.5 / 359.5; columns 140 -> 200 about 149.5
    assert expand(Box(0, 299, 100, 199), 1.4, 200) == Box(-60, 360, 50, 250)


def test_box_iou_and_positive_clicks_inside():
    assert box_iou(Box(0, 9, 0, 9), Box(5, 14, 0, 9)) == pytest.approx(5 / 15)
    assert box_iou(Box(0, 9, 0, 9), Box(0, 9, 0, 9)) == 1.0
    box = Box(0, 10, 0, 10)
    assert holds_positives(box, [Click(9, 9, True), Click(50, 50, False)])  # negatives do not count
    assert not holds_positives(box, [Click(10, 5, True)])  # half-open at the max side


def test_object_box_adds_positive_clicks_and_thresholds_at_one_half():
    prob = np.zeros((300, 300), np.float32)
    prob[40:60, 40:60] = 0.9
    prob[200:210, 200:210] = 0.5  # not > 0.5
    # rows 40..100 (the click), cols 40..59 -> both sides 200 about (70, 49.5), clamped at 0
    assert object_box(prob, [Click(100, 50, True), Click(250, 250, False)]) == Box(0, 170, 0, 150)
    assert object_box(np.full((300, 300), 0.5, np.float32), [Click(5, 5, True)]) is None


def test_zoom_in_recomputes_only_when_needed():
    zoom = ZoomIn()
    prob = np.zeros((600, 600), np.float32)
    prob[100:300, 100:300] = 1.0
    first = [Click(200, 200, True)]
    assert zoom.update(first, None) == View()  # click 1: the full image
    box = zoom.update(first + [Click(150, 150, True)], prob).box
    assert box == Box(60, 340, 60, 340)  # 200 px * 1.4 about 199.5
    moved = np.roll(prob, 20, axis=1)  # a small shift: IoU >= 0.5, the crop stays
    assert zoom.update(first + [Click(150, 150, True), Click(5, 5, False)], moved) == View(box)
    outside = first + [Click(150, 150, True), Click(340, 200, True)]  # a positive click on the max row
    # rows 100..340 with the click: 241 * 1.4 = 337.4 about 220 -> 51.3 / 388.7
    assert zoom.update(outside, prob) == View(Box(51, 389, 60, 340))
    far = np.zeros_like(prob)
    far[400:600, 400:600] = 1.0
    two = [Click(500, 500, True), Click(450, 450, True)]
    assert zoom.update(two, far) == View(Box(360, 599, 360, 599))
    # an empty prediction: the full image, squashed into the crop that stays (isegm transform / inv_transform)
    assert zoom.update(two, np.zeros_like(prob)) == View(Box(360, 599, 360, 599), squashed=True)
    assert zoom.update(two, far) == View(Box(360, 599, 360, 599))
    assert zoom.update([Click(500, 500, True)], far) == View()  # a new object starts on the full image
    assert zoom.update(two, np.zeros_like(prob)) == View()  # empty before any crop: the full image as it is


# ------------------------------------------------------------------------------------------------ crop geometry
def test_crop_maps_clicks_into_the_crop_and_sizes_it():
    box = Box(10, 29, 20, 59)  # 20 x 40 px
    fit = Crop.of(box, (100, 100), 8, stretch=False)
    assert fit.content == (4, 8)  # longest side to 8
    assert fit.to_input(10, 20) == (0.0, 0.0) and fit.to_input(20, 40) == (2.0, 4.0)  # h' * (y - rmin) / h
    square = Crop.of(box, (100, 100), 8, stretch=True)
    assert square.content == (8, 8) and square.to_input(20, 40) == (4.0, 4.0)


def test_crop_resizes_with_aligned_corners_and_pastes_back():
    box = Box(10, 29, 20, 59)
    crop = Crop.of(box, (100, 100), 8, stretch=False)  # content 4 x 8, rows 4..7 padding
    cols = torch.arange(100.0).expand(1, 1, 100, 100)
    x = crop.crop(cols)
    assert x.shape == (1, 1, 8, 8)
    np.testing.assert_allclose(x[0, 0, 0].numpy(), np.linspace(20, 59, 8), rtol=1e-6)  # end pixels aligned
    assert x[0, 0, 4:].abs().sum() == 0  # padding
    prev = np.zeros((100, 100), bool)
    prev[10:20] = True  # rows 10..19 of the box's 10..29; content rows sample rint(i * 19 / 3) = 0, 6, 13, 19
    assert crop.mask(prev)[0, 0, :, 0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]

    logits = torch.full((1, 1, 8, 8), 50.0)  # padding rows hold huge logits: must not leak
    logits[..., :4, :8] = torch.arange(8.0)
    prob = crop.to_original(logits)[0, 0].numpy()
    assert prob.shape == (100, 100)
    outside = np.ones((100, 100), bool)
    outside[10:30, 20:60] = False
    assert prob[outside].max() == 0  # pasted into zeros
    np.testing.assert_allclose(prob[10:30, 20], _sig(0), rtol=1e-6)
    np.testing.assert_allclose(prob[10:30, 59], _sig(7), rtol=1e-6)
    # sigmoid first, then probabilities interpolated: column 20 + 13 sits at 13 * 7 / 39 = 2.333 of the crop
    np.testing.assert_allclose(prob[15, 33], _sig(2) + (_sig(3) - _sig(2)) * (13 * 7 / 39 - 2), rtol=1e-5)


# ------------------------------------------------------------------------------------------------ flip
class RampModel(nn.Module):
    """Not flip-symmetric: logit = image channel 0 + the x of the first click; records its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.encoded: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.prev: torch.Tensor | None = None

    def encode(self, image, depth=None, depth_kind="disparity") -> ImageEncoding:
        self.encoded.append((image, depth))
        return ImageEncoding([image], depth, (image.shape[-2], image.shape[-1]))

    def forward(self, enc, coords, labels, prev_mask=None):
        self.prev = prev_mask
        return enc.feats[0][:, :1] + coords[:, 0, 1].view(-1, 1, 1, 1)  # B,1,S,S


def test_flip_averages_unmirrored_logits():
    """H=8, W=4 letterboxed into 8 x 8: content 4 wide, padding right. Mirror view: image M(I), click
    x' = 3 - x, so the logits are M(I) + 3 - x; un-mirrored and averaged with I + x: I + 1.5 for any x."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (8, 4, 3), dtype=np.uint8)
    depth = rng.random((8, 4)).astype(np.float32)
    sample = Sample(image, np.zeros((0, 8, 4), np.int8), depth, "f/0")
    model = RampModel()
    plain = Predictor(model, 8, depth_from_sample=True)
    plain.set_image(sample)
    i = image[..., 0].astype(np.float64) / 255.0
    np.testing.assert_allclose(plain.predict([Click(2, 1, True)]), _sig(i + 1), rtol=1e-6)
    flip = Predictor(model, 8, depth_from_sample=True, flip=True)
    model.encoded.clear()
    flip.set_image(sample)
    (batch, d), = model.encoded  # one encoder call, image and mirror as a batch of 2
    assert batch.shape == (2, 3, 8, 8) and torch.equal(batch[1, :, :, :4], batch[0, :, :, :4].flip(-1))
    assert batch[1, :, :, 4:].abs().sum() == 0  # padding stays right
    assert torch.equal(d[1], mirror(d[:1], 4)[0])  # depth mirrored with the image
    for x in (0, 1, 3):
        np.testing.assert_allclose(flip.predict([Click(2, x, True)]), _sig(i + 1.5), rtol=1e-6)
    prev = np.zeros((8, 4), bool)
    prev[:, 0] = True
    flip.predict([Click(2, 1, True), Click(3, 3, False)], prev)
    assert model.prev[0, 0, :, 0].all() and model.prev[1, 0, :, 3].all() and model.prev[1, 0, :, :3].sum() == 0


def _zoom_in_predictor(seed: int) -> tuple[RampModel, Predictor]:
    """A RampModel behind a stretch Predictor (28 px, zoom-in at 14 px) set to a random 300 x 400 image."""
    rng = np.random.default_rng(seed)
    sample = Sample(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), np.zeros((0, 300, 400), np.int8), None,
                    f"z/{seed}")
    model = RampModel()
    predictor = Predictor(model, 28, zoom_in_size=14, resize="stretch")
    predictor.set_image(sample)
    return model, predictor


def test_zoom_in_reencodes_the_crop_and_pastes_into_the_full_map():
    model, predictor = _zoom_in_predictor(2)
    prob = predictor.predict([Click(150, 10, True)])  # full image: logits I + x', all > 0.5
    assert len(model.encoded) == 1 and (prob > 0.5).all()
    prob = np.zeros_like(prob)
    prob[100:120, 100:140] = 1.0
    predictor._prev_prob = prob  # the previous round predicted a 20 x 40 object
    out = predictor.predict([Click(150, 10, True), Click(110, 120, True)], prob > 0.49)
    # rows 100..150 (the first click), cols 10..139 -> 200 x 200 about (125, 74.5), clamped
    assert predictor._crop[0].box == Box(25, 225, 0, 174) and len(model.encoded) == 2
    assert model.encoded[1][0].shape == (1, 3, 14, 14)  # the crop, stretched to zoom_in_size
    assert out[:25].max() == 0 and out[:, 175:].max() == 0 and out[25:226, :175].min() > 0.5


def test_zoom_in_after_an_empty_prediction_runs_the_full_image_squashed_into_the_crop():
    """isegm ZoomIn: with a crop chosen, an empty previous prediction gives the model the full image and the
    clicks as they are; its probabilities are resized (aligned corners) into the crop's box, zero elsewhere."""
    model, predictor = _zoom_in_predictor(4)
    clicks = [Click(150, 10, True), Click(110, 120, True)]
    full = predictor.predict(clicks[:1])  # the full image's probabilities (logits I + x' of the first click)
    prob = np.zeros_like(full)
    prob[100:120, 100:140] = 1.0
    predictor._prev_prob = prob
    predictor.predict(clicks, prob > 0.49)  # crop Box(25, 225, 0, 174), encoded at 14 x 14
    assert len(model.encoded) == 2
    empty = np.zeros_like(full)
    predictor._prev_prob = empty  # this round predicted nothing
    out = predictor.predict(clicks + [Click(20, 390, False)], empty > 0.49)
    assert len(model.encoded) == 2 and model.prev.shape == (1, 1, 28, 28)  # the full image's encoding and frame
    assert predictor._crop[0].box == Box(25, 225, 0, 174)  # the crop stays for the next round
    expected = torch.nn.functional.interpolate(torch.from_numpy(full)[None, None], size=(201, 175),
                                               mode="bilinear", align_corners=True)[0, 0].numpy()
    assert out[:25].max() == 0 and out[226:].max() == 0 and out[:, 175:].max() == 0
    np.testing.assert_allclose(out[25:226, :175], expected, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ end to end
def _samples() -> list[Sample]:
    """Non-square images, one with two disks, one 260 x 230 (zoom-in crops smaller than the image), one empty."""
    rng = np.random.default_rng(3)
    out = []
    for i, (h, w) in enumerate([(90, 150), (260, 230)]):
        yy, xx = np.mgrid[:h, :w]
        masks = [(yy - h // 2) ** 2 + (xx - w // 3) ** 2 < 15 ** 2, (yy - h // 3) ** 2 + (xx - 2 * w // 3) ** 2 < 100]
        out.append(Sample(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), np.stack(masks).astype(np.int8),
                          rng.random((h, w)).astype(np.float32), f"p/{i}"))
    out.insert(1, Sample(np.zeros((40, 60, 3), np.uint8), np.zeros((0, 40, 60), np.int8),
                         np.zeros((40, 60), np.float32), "p/empty"))
    return out


PROTOCOLS = {
    "letterbox": [],
    "stretch": ["eval.resize=stretch"],
    "stretch_zoom": ["eval.resize=stretch", "eval.zoom_in=true", "eval.zoom_in_size=56"],
    "letterbox_zoom_flip": ["eval.zoom_in=true", "eval.flip=true"],
    "stretch_flip": ["eval.resize=stretch", "eval.flip=true"],
}


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_each_protocol_evaluates_and_is_recorded(name, tmp_path, capsys):
    cfg = load_config(TINY_YAML, TINY + ["clicks.max_eval=5", *PROTOCOLS[name]])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    calls = []
    encode = model.encode
    model.encode = lambda *a, **k: calls.append(a[0].shape) or encode(*a, **k)
    result = evaluate(model, _samples(), cfg, progress=False)
    assert len(result.ids) == 4 and all(len(c) == 5 for c in result.ious)
    assert all(np.isfinite(result.summary[k]) for k in ("NoC90", "1-mIoU", "5-mIoU", "SPC"))
    batch = 2 if cfg.eval.flip else 1
    assert calls[0][0] == batch and calls[0][-1] == 112
    if cfg.eval.zoom_in:  # crops are encoded at zoom_in_size (default model.input_size)
        assert len(calls) > 2 and any(c[-1] == (cfg.eval.zoom_in_size or 112) for c in calls[1:])
    else:
        assert len(calls) == 2  # encode once per image
    assert "skipped 1 samples without an object mask" in capsys.readouterr().out
    data = json.loads(write_results(result, tmp_path, cfg, "protocols").read_text())
    zoom = {"stretch_zoom": 56, "letterbox_zoom_flip": 112}.get(name)
    assert data["summary"]["protocol"] == {"resize": "stretch" if "stretch" in name else "letterbox",
                                           "zoom_in": zoom is not None, "zoom_in_size": zoom, "flip": "flip" in name}
    assert data["summary"]["skipped"] == {"count": 1, "ids": ["p/empty"]}
    assert data["config"]["eval"]["resize"] == data["summary"]["protocol"]["resize"]


def test_skipped_samples_survive_a_resume(tmp_path):
    cfg = load_config(TINY_YAML, TINY + ["clicks.max_eval=5"])
    model = build_model(cfg.model)
    journal = tmp_path / "eval_journal.jsonl"
    first = evaluate(model, _samples(), cfg, progress=False, journal=journal)
    resumed = evaluate(model, _samples(), cfg, progress=False, journal=journal)  # every image from the journal
    assert first.skipped == resumed.skipped == ["p/empty"] and resumed.ious == first.ious
    stretched = load_config(TINY_YAML, TINY + ["clicks.max_eval=5", "eval.resize=stretch"])
    calls = []
    encode = model.encode
    model.encode = lambda *a, **k: calls.append(1) or encode(*a, **k)
    evaluate(model, _samples(), stretched, progress=False, journal=journal)
    assert len(calls) == 2  # another protocol: another fingerprint, nothing reused


def test_feature_cache_keys_follow_the_protocol(tmp_path):
    """Stretched and flipped inputs are other tensors, hence other entries; zoom-in crops bypass the cache."""
    torch.manual_seed(0)
    model = build_model(load_config(TINY_YAML, TINY).model).eval()
    # 2 images each: letterbox, stretch and stretch + flip add entries; stretch_zoom reads stretch's, adds no crop
    for name, entries in (("letterbox", 2), ("stretch", 4), ("stretch_flip", 6), ("stretch_zoom", 6)):
        cfg = load_config(TINY_YAML, TINY + ["clicks.max_eval=5", f"eval.feature_cache={tmp_path}", *PROTOCOLS[name]])
        cached = evaluate(model, _samples(), cfg, progress=False)
        assert len(list(tmp_path.glob("*.pt"))) == entries, name
        plain = evaluate(model, _samples(), load_config(TINY_YAML, TINY + ["clicks.max_eval=5", *PROTOCOLS[name]]),
                         progress=False)
        assert cached.ious == plain.ious, name  # a cached run equals an uncached one


def test_zoom_in_size_must_fit_the_patch_grid():
    with pytest.raises(ConfigError, match="eval.zoom_in_size=100 must be a positive multiple"):
        load_config(TINY_YAML, TINY + ["eval.zoom_in_size=100"])
    with pytest.raises(ConfigError, match="eval.resize"):
        load_config(TINY_YAML, TINY + ["eval.resize=squash"])
