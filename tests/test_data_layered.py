"""Layered scenes: determinism, shapes, look-alike objects that differ only in depth, and the depth oracle."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch

from ois_lightning.data import DataError, LayeredScenes, build_dataset
from ois_lightning.model.order import order_maps
from ois_lightning.model.prompts import POS

SIZE = 128


@pytest.fixture(scope="module")
def scenes() -> list:
    return list(LayeredScenes(20, size=SIZE, seed=11))


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """The pixel farthest from the mask's border."""
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(y), int(x)


def test_scene_is_a_function_of_seed_and_index() -> None:
    a = LayeredScenes(3, size=64, seed=5)[2]
    b = LayeredScenes(10, size=64, seed=5)[2]
    c = LayeredScenes(3, size=64, seed=6)[2]
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert a.id == b.id == "layered/5-2" and c.id == "layered/6-2"
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.image, LayeredScenes(3, size=64, seed=5)[1].image)


def test_registry_and_index_range() -> None:
    val = build_dataset("layered", "", "val", length=4, size=64)
    assert isinstance(val, LayeredScenes) and len(val) == 4 and val.seed == 1
    np.testing.assert_array_equal(val[-1].image, val[3].image)
    with pytest.raises(IndexError):
        val[4]
    with pytest.raises(DataError, match="split"):
        build_dataset("layered", "", "holdout", length=4)


def test_shapes_values_and_visible_instances(scenes: list) -> None:
    for s in scenes:
        k = len(s.masks)
        assert 1 <= k <= 5
        assert s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8
        assert s.masks.shape == (k, SIZE, SIZE) and s.masks.dtype == np.int8
        assert set(np.unique(s.masks).tolist()) <= {0, 1}
        assert s.masks.sum(0).max() <= 1  # visible parts are disjoint
        assert (s.masks.reshape(k, -1).sum(1) >= 0.01 * SIZE * SIZE).all()
        assert s.depth.shape == (SIZE, SIZE) and s.depth.dtype == np.float32 and s.depth_kind == "disparity"
        assert s.depth.min() == 0.0 and s.depth.max() == pytest.approx(1.0)
        background = ~s.masks.astype(bool).any(0)
        assert s.depth[background].mean() < min(s.depth[m.astype(bool)].mean() for m in s.masks)  # farthest
    assert sum(len(s.masks) >= 3 for s in scenes) >= 10


def test_objects_look_alike_but_differ_in_depth(scenes: list) -> None:
    colour_gaps, background_gaps = [], []
    for s in scenes:
        objects = s.masks.astype(bool)
        colours = [s.image[m].mean(0) for m in objects]
        depths = [s.depth[m].mean() for m in objects]
        background = s.image[~objects.any(0)].mean(0)
        for a, b in itertools.combinations(range(len(objects)), 2):
            colour_gaps.append(np.abs(colours[a] - colours[b]).max())
            assert abs(depths[a] - depths[b]) > 0.05
        background_gaps += [np.abs(c - background).max() for c in colours]
    assert max(colour_gaps) < 30 and np.mean(colour_gaps) < 10  # same colour family (0..255 scale)
    assert np.mean(background_gaps) > 3 * np.mean(colour_gaps)


def test_depth_oracle_order_map_separates_look_alikes(scenes: list) -> None:
    """A positive click inside the target: the order map |R - R_click| is small on the target and large on
    every look-alike (all objects sit at distinct depth levels by construction)."""
    on_target, on_others = [], []
    for s in scenes:
        depth = torch.from_numpy(s.depth)[None, None]
        for t, target in enumerate(s.masks.astype(bool)):
            coords = torch.tensor([[interior_point(target)]], dtype=torch.float32)
            order = order_maps(depth, coords, torch.tensor([[POS]]), mode="pos+neg")[0, 0].numpy()
            on_target.append(order[target].mean())
            on_others += [order[m.astype(bool)].mean() for k, m in enumerate(s.masks) if k != t]
    assert np.mean(on_target) < 0.1
    assert np.mean(on_others) > 0.3
