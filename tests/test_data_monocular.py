"""Monocular depth cues of the layered scenes: each named cue changes the scene as it says, the occlusion-only
scenes are unchanged, bad names are refused in one line, and the config key reaches the dataset."""
from __future__ import annotations

import numpy as np
import pytest

from ois_lightning.config.load import load_config
from ois_lightning.config.schema import ConfigError
from ois_lightning.data import DataError, LayeredScenes
from ois_lightning.data.monocular import CUES, PRESETS, resolve_cues
from ois_lightning.data.splits import read_split

from .helpers import REPO

SIZE = 96


def scenes(cues, n: int = 12, seed: int = 7) -> list:
    return list(LayeredScenes(n, size=SIZE, seed=seed, cues=cues))


def test_presets_and_names():
    assert resolve_cues("occlusion") == () and resolve_cues("monocular") == CUES == PRESETS["monocular"]
    assert resolve_cues(["haze", "ground"]) == ("ground", "haze")  # canonical order
    with pytest.raises(DataError, match="'fog'.*expected some of"):
        LayeredScenes(2, cues=["ground", "fog"])
    with pytest.raises(DataError, match="'photo'"):
        LayeredScenes(2, cues="photo")


def test_occlusion_only_is_todays_generator():
    """cues=() runs the occlusion-only code path: a scene of it is not the monocular scene of the same index."""
    a, b = LayeredScenes(3, size=SIZE, seed=5)[1], LayeredScenes(3, size=SIZE, seed=5, cues="occlusion")[1]
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert a.depth.min() == 0.0  # min-max normalised, as before
    assert not np.array_equal(a.image, LayeredScenes(3, size=SIZE, seed=5, cues="monocular")[1].image)


def test_every_cue_changes_the_scene_and_stays_deterministic():
    base = scenes(["ground"], n=2)
    for cue in CUES[1:]:
        with_cue = scenes(["ground", cue], n=2)
        assert not np.array_equal(base[0].image, with_cue[0].image), cue
        again = scenes(["ground", cue], n=2)
        np.testing.assert_array_equal(with_cue[0].image, again[0].image)
        np.testing.assert_array_equal(with_cue[0].depth, again[0].depth)


def _ground_rows(sample) -> np.ndarray:
    """Mean disparity of each background row (-1 where the row has no background pixel)."""
    background = sample.masks.sum(0) == 0
    return np.array([sample.depth[r][background[r]].mean() if background[r].any() else -1.0 for r in range(SIZE)])


def test_ground_disparity_grows_down_the_frame_and_objects_stand_on_it():
    for s in scenes(["ground"]):
        rows = _ground_rows(s)
        seen = rows[rows >= 0]
        assert np.all(np.diff(seen) >= -1e-6)  # farther up, nearer down: a ground plane below a back wall
        assert 0.1 < s.depth.min() and s.depth.max() == pytest.approx(1.0)  # no zero disparity: AbsRel is defined
        for m in s.masks.astype(bool):
            base = np.nonzero(m.any(1))[0].max()  # the lowest row of the visible part
            assert abs(float(np.median(s.depth[m])) - rows[min(base + 1, SIZE - 1)]) < 0.2 or base >= SIZE - 2


def test_perspective_makes_nearer_objects_larger():
    """Over many objects, apparent size grows with disparity under perspective and not without it."""

    def correlation(cues) -> float:
        sizes, levels = [], []
        for s in scenes(cues, n=30, seed=3):
            for m in s.masks.astype(bool):
                rows = np.nonzero(m.any(1))[0]
                sizes.append(rows.max() - rows.min())  # height: occlusion cuts little of it
                levels.append(float(np.median(s.depth[m])))
        return float(np.corrcoef(sizes, levels)[0, 1])

    assert correlation(["ground", "perspective"]) > 0.5
    assert correlation(["ground"]) < 0.3


def test_haze_lowers_contrast_far_away():
    def far_contrast(cues) -> float:
        out = []
        for s in scenes(cues, n=6):
            far = s.depth < 0.4
            out.append(s.image[far].std())
        return float(np.mean(out))

    assert far_contrast(["ground", "haze"]) < 0.9 * far_contrast(["ground"])


def test_shading_darkens_the_lower_right_of_each_object():
    """Lit from the upper left: the lower-right half of an object is darker than its upper-left half."""
    darker = []
    for s in scenes(["ground", "shading"], n=10):
        grey = s.image.mean(-1)
        for m in s.masks.astype(bool):
            ys, xs = np.nonzero(m)
            cy, cx = ys.mean(), xs.mean()
            upper_left = grey[ys[(ys < cy) & (xs < cx)], xs[(ys < cy) & (xs < cx)]].mean()
            lower_right = grey[ys[(ys > cy) & (xs > cx)], xs[(ys > cy) & (xs > cx)]].mean()
            darker.append(lower_right < upper_left)
    assert np.mean(darker) > 0.8


def test_config_key_reaches_the_dataset_and_unknown_cues_are_refused():
    cfg = load_config(REPO / "experiments" / "tiny.yaml", ["data.layered.cues=[ground,haze]", "data.layered.size=56"])
    assert read_split(cfg, "layered", "test").cues == ("ground", "haze")
    with pytest.raises(ConfigError, match=r"data.layered.cues=.*'fog' is not one of ground, perspective"):
        load_config(REPO / "experiments" / "tiny.yaml", ["data.layered.cues=[fog]"])
