"""Augmentations move image, masks, depth and keypoints together; ignore stays -1; output sizes."""
from __future__ import annotations

import numpy as np
import pytest

from ois_lightning.data import Sample, apply, build_eval_transform, build_train_transform

H, W, SIZE = 90, 130, 128
TOP, LEFT, SIDE = 30, 70, 13  # the marked square
CLICK = (TOP + SIDE // 2, LEFT + SIDE // 2)


def marked_sample() -> Sample:
    """Grey image with a red square that is object 0 and the only near depth; object 1 has an ignore band."""
    image = np.full((H, W, 3), 128, np.uint8)
    image[TOP : TOP + SIDE, LEFT : LEFT + SIDE] = (255, 0, 0)
    masks = np.zeros((2, H, W), np.int8)
    masks[0, TOP : TOP + SIDE, LEFT : LEFT + SIDE] = 1
    masks[1, 5:25, 5:45] = -1
    masks[1, 10:20, 10:40] = 1
    depth = np.zeros((H, W), np.float32)
    depth[TOP : TOP + SIDE, LEFT : LEFT + SIDE] = 5.0  # beyond 0..1: no clipping either
    return Sample(image=image, masks=masks, depth=depth, id="test/marked")


def assert_marked_at(sample: Sample, point: tuple[float, float]) -> None:
    y, x = round(point[0]), round(point[1])
    r, g, b = (int(v) for v in sample.image[y, x])
    assert r > g + 100 and r > b + 100, (y, x, r, g, b)
    assert sample.masks[0, y, x] == 1 and sample.masks[1, y, x] == 0
    assert sample.depth[y, x] > 4.0
    assert sample.valid[y, x]


def assert_shapes(sample: Sample, k: int) -> None:
    assert sample.image.shape == (SIZE, SIZE, 3) and sample.image.dtype == np.uint8
    assert sample.masks.shape == (k, SIZE, SIZE) and sample.masks.dtype == np.int8
    assert sample.depth.shape == (SIZE, SIZE) and sample.depth.dtype == np.float32
    assert sample.valid.shape == (SIZE, SIZE) and sample.valid.dtype == bool
    assert set(np.unique(sample.masks).tolist()) <= {-1, 0, 1}


def test_train_transform_keeps_targets_aligned() -> None:
    transform = build_train_transform(SIZE)
    transform.set_seed(0)
    inside = 0
    for _ in range(30):
        out, points = apply(transform, marked_sample(), [CLICK, (0, 0)])
        assert_shapes(out, 2)
        assert len(points) == 2
        assert (out.masks[1] == -1).any() or not out.valid.all()  # the band may be cropped away
        assert not ((out.masks != 0) & ~out.valid).any()  # padding and warp fill are background
        if 0 <= round(points[0][0]) < SIZE and 0 <= round(points[0][1]) < SIZE:
            assert_marked_at(out, points[0])
            inside += 1
    assert inside >= 15


def test_train_transform_is_seeded() -> None:
    a, b = build_train_transform(SIZE), build_train_transform(SIZE)
    a.set_seed(7)
    b.set_seed(7)
    (sa, pa), (sb, pb) = apply(a, marked_sample(), [CLICK]), apply(b, marked_sample(), [CLICK])
    np.testing.assert_array_equal(sa.image, sb.image)
    assert pa == pb


def test_eval_transform_resizes_and_pads_top_left() -> None:
    out, points = apply(build_eval_transform(SIZE), marked_sample(), [CLICK])
    assert_shapes(out, 2)
    rows = round(H * SIZE / W)  # longest side W -> SIZE
    assert out.valid[:rows].all() and not out.valid[rows + 1 :].any()
    assert (out.image[rows + 1 :] == 0).all() and (out.masks[:, rows + 1 :] == 0).all()
    assert points[0] == pytest.approx((CLICK[0] * SIZE / W, CLICK[1] * SIZE / W), abs=0.5)
    assert_marked_at(out, points[0])
    band = out.masks[1] == -1
    assert band.sum() > 0.8 * (20 * 40 - 10 * 30) * (SIZE / W) ** 2  # ignore survives nearest resampling
    edge = out.depth[(out.depth > 0) & (out.depth < 5.0)]
    assert edge.size > 0  # depth is resized with linear interpolation ...
    assert set(np.unique(out.masks[0]).tolist()) == {0, 1}  # ... masks with nearest neighbour


def test_empty_masks_and_missing_depth() -> None:
    sample = marked_sample()
    empty = Sample(image=sample.image, masks=np.zeros((0, H, W), np.int8), depth=None, id="test/empty")
    for transform in (build_train_transform(SIZE), build_eval_transform(SIZE)):
        out, points = apply(transform, empty)
        assert out.masks.shape == (0, SIZE, SIZE) and out.depth is None and points == []
        assert out.image.shape == (SIZE, SIZE, 3) and out.id == "test/empty"
