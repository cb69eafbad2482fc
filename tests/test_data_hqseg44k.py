"""HQSeg44K in the layout of the sam-hq / SegNext release: miniature trees with per-subset counts, ids, decoded
masks, subset selection and the missing-folder / missing-mask problems."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from ois_lightning.data import HQSEG44K_SPLITS, DataError, HQSeg44K, build_dataset, collect_problems

H, W = 24, 32
TRAIN = {  # subset -> (image folder, mask folder) of the published release
    "DIS5K-TR": ("DIS5K/DIS-TR/im", "DIS5K/DIS-TR/gt"),
    "ThinObject5K-TR": ("thin_object_detection/ThinObject5K/images_train",
                        "thin_object_detection/ThinObject5K/masks_train"),
    "FSS": ("cascade_psp/fss_all", "cascade_psp/fss_all"),
    "DUTS-TR": ("cascade_psp/DUTS-TR", "cascade_psp/DUTS-TR"),
    "DUTS-TE": ("cascade_psp/DUTS-TE", "cascade_psp/DUTS-TE"),
    "ECSSD": ("cascade_psp/ecssd", "cascade_psp/ecssd"),
    "MSRA10K": ("cascade_psp/MSRA_10K", "cascade_psp/MSRA_10K"),
}
VAL = {
    "DIS5K-VD": ("DIS5K/DIS-VD/im", "DIS5K/DIS-VD/gt"),
    "ThinObject5K-TE": ("thin_object_detection/ThinObject5K/images_test",
                        "thin_object_detection/ThinObject5K/masks_test"),
    "COIFT": ("thin_object_detection/COIFT/images", "thin_object_detection/COIFT/masks"),
    "HRSOD": ("thin_object_detection/HRSOD/images", "thin_object_detection/HRSOD/masks_max255"),
}
COUNTS = {name: k + 1 for k, name in enumerate([*TRAIN, *VAL])}  # distinct count per subset


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def object_mask(k: int) -> np.ndarray:
    """Image k's object: a box whose position depends on k (bool, H,W)."""
    mask = np.zeros((H, W), bool)
    mask[2 + k % 5: 12 + k % 5, 3 + k % 7: 20 + k % 7] = True
    return mask


def stored(mask: np.ndarray, k: int) -> np.ndarray:
    """The mask as a release file would hold it: 255, 1, or (3 channels) only the last channel set."""
    if k % 3 == 2:
        out = np.zeros((H, W, 3), np.uint8)
        out[mask, 2] = 200
        return out
    return mask.astype(np.uint8) * (255 if k % 3 == 0 else 1)


def release_tree(root: Path) -> Path:
    """Every subset of both splits with COUNTS[name] images ``<name>_<jj>.jpg`` and same-stem ``.png`` masks."""
    k = 0
    for name, (images, masks) in {**TRAIN, **VAL}.items():
        for j in reversed(range(COUNTS[name])):  # written out of order: the listing sorts
            stem = f"{name.lower()}_{j:02d}"
            write(root / images / f"{stem}.jpg", np.full((H, W, 3), 10 * j, np.uint8))
            write(root / masks / f"{stem}.png", stored(object_mask(k), k))
            k += 1
    return root


def subset_of(sample_id: str) -> str:
    dataset, subset, _ = sample_id.split("/")
    assert dataset == "hqseg44k"
    return subset


@pytest.mark.parametrize(("split", "subsets"), [("train", TRAIN), ("val", VAL), ("test", VAL)])
def test_split_loads_published_layout_with_per_subset_counts(tmp_path: Path, split: str, subsets: dict) -> None:
    release_tree(tmp_path)
    ds = build_dataset("hqseg44k", str(tmp_path), split)
    assert isinstance(ds, HQSeg44K) and ds.name == "hqseg44k"
    assert [s.name for s in HQSEG44K_SPLITS[split]] == list(subsets)
    ids = [pair[2] for pair in ds.pairs]
    assert {name: sum(subset_of(i) == name for i in ids) for name in subsets} == {n: COUNTS[n] for n in subsets}
    expected = [f"hqseg44k/{name}/{name.lower()}_{j:02d}" for name in subsets for j in range(COUNTS[name])]
    assert ids == expected  # subsets in table order, images sorted within each
    for image, mask, sample_id in ds.pairs:
        images, masks = subsets[subset_of(sample_id)]
        assert image.parent == tmp_path / images and mask == tmp_path / masks / f"{image.stem}.png"
    for sample in ds:
        assert sample.masks.shape == (1, H, W) and set(np.unique(sample.masks).tolist()) == {0, 1}


def test_decoded_masks_any_channel_and_value(tmp_path: Path) -> None:
    release_tree(tmp_path)
    ds = HQSeg44K(tmp_path, split="val")
    k = sum(COUNTS[n] for n in TRAIN)  # release_tree's running index of the first val image
    by_id = {s.id: s for s in ds}
    for name in VAL:
        for j in reversed(range(COUNTS[name])):
            np.testing.assert_array_equal(by_id[f"hqseg44k/{name}/{name.lower()}_{j:02d}"].masks[0],
                                          object_mask(k).astype(np.int8))
            k += 1


def test_images_listed_flat_and_only_jpg(tmp_path: Path) -> None:
    release_tree(tmp_path)
    coift_images, coift_masks = (tmp_path / f for f in VAL["COIFT"])
    write(coift_images / "nested" / "deep.jpg", np.zeros((H, W, 3), np.uint8))  # below the folder: not listed
    write(coift_masks / "nested" / "deep.png", stored(object_mask(0), 0))
    write(coift_images / "extra.png", np.zeros((H, W, 3), np.uint8))  # not a *.jpg: not an image
    write(coift_images / "upper.JPG", np.zeros((H, W, 3), np.uint8))  # sam-hq / SegNext glob "*.jpg": skipped
    write(coift_masks / "upper.png", stored(object_mask(0), 0))
    one = HQSeg44K(tmp_path, subsets=["COIFT"])
    assert [p[2] for p in one.pairs] == [f"hqseg44k/COIFT/coift_{j:02d}" for j in range(COUNTS["COIFT"])]


def test_select_subsets_by_name_from_any_split(tmp_path: Path) -> None:
    release_tree(tmp_path)
    ds = HQSeg44K(tmp_path, subsets=["HRSOD", "ECSSD"])
    assert [subset_of(p[2]) for p in ds.pairs] == ["HRSOD"] * COUNTS["HRSOD"] + ["ECSSD"] * COUNTS["ECSSD"]
    assert ds.pairs[0][1].parent == tmp_path / "thin_object_detection/HRSOD/masks_max255"
    with pytest.raises(DataError, match=r"unknown HQSeg44K subsets \['COIFT/images'\]"):
        HQSeg44K(tmp_path, subsets=["COIFT/images"])
    with pytest.raises(DataError, match="unknown HQSeg44K split"):
        HQSeg44K(tmp_path, split="trainval")


def test_missing_subset_folder_is_a_problem(tmp_path: Path) -> None:
    release_tree(tmp_path)
    gone = tmp_path / VAL["HRSOD"][1]
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    with pytest.raises(DataError, match=re.escape(str(gone))):
        HQSeg44K(tmp_path, split="val")
    with collect_problems() as problems:
        ds = HQSeg44K(tmp_path, split="val")
    assert len(problems) == 1 and str(gone) in str(problems[0]) and "HRSOD" in str(problems[0])
    assert len(ds) == sum(COUNTS[n] for n in VAL) - COUNTS["HRSOD"]


def test_missing_mask_is_a_problem_and_the_image_is_left_out(tmp_path: Path) -> None:
    release_tree(tmp_path)
    image_dir, mask_dir = (tmp_path / f for f in TRAIN["DIS5K-TR"])
    (mask_dir / "dis5k-tr_00.png").unlink()
    with pytest.raises(DataError, match=re.escape(str(image_dir / "dis5k-tr_00.jpg"))):
        HQSeg44K(tmp_path, subsets=["DIS5K-TR"])
    with collect_problems() as problems:
        ds = HQSeg44K(tmp_path, split="train")
    assert len(problems) == 1 and str(mask_dir / "dis5k-tr_00.png") in str(problems[0])
    assert len(ds) == sum(COUNTS[n] for n in TRAIN) - 1
    assert "hqseg44k/DIS5K-TR/dis5k-tr_00" not in [p[2] for p in ds.pairs]


def test_unpublished_layout_is_not_read(tmp_path: Path) -> None:
    """Masks beside the images under ``ThinObject5K/images_train`` (no ``thin_object_detection/`` level) is not a
    published layout: the subset folders are reported missing."""
    write(tmp_path / "ThinObject5K" / "images_train" / "a.jpg", np.zeros((H, W, 3), np.uint8))
    write(tmp_path / "ThinObject5K" / "images_train" / "a.png", stored(object_mask(0), 0))
    with collect_problems() as problems:
        ds = HQSeg44K(tmp_path, subsets=["ThinObject5K-TR"])
    assert len(ds) == 0 and len(problems) == 1
    assert str(tmp_path / TRAIN["ThinObject5K-TR"][0]) in str(problems[0])
