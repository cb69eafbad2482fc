"""Dataset layouts: small folders written in each layout, the real GrabCut copy when present, COCO/LVIS JSON,
bad-data errors and depth files."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ois_lightning.data import (
    DATASETS,
    Berkeley,
    COCOInstances,
    DataError,
    Davis,
    DepthFolder,
    GrabCut,
    build_dataset,
    read_depth,
    write_depth,
)

H, W = 40, 60


def bgr(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def square_mask(value: int = 255, channels: int = 0) -> np.ndarray:
    """A mask with ``value`` on rows 10..29, cols 20..39 (in every channel when ``channels`` > 0)."""
    mask = np.zeros((H, W, channels) if channels else (H, W), np.uint8)
    mask[10:30, 20:40] = value
    return mask


def grabcut_folder(root: Path) -> Path:
    """Three images (.png, .bmp, .jpg) with masks: a 255 square inside a 128 band, and an empty mask."""
    band = np.zeros((H, W), np.uint8)
    band[8:32, 18:42] = 128
    band[10:30, 20:40] = 255
    write(root / "data_GT" / "a.png", bgr(0))
    write(root / "boundary_GT" / "a.bmp", band)
    write(root / "data_GT" / "b.bmp", bgr(1))
    write(root / "boundary_GT" / "b.png", band)
    write(root / "data_GT" / "c.jpg", bgr(2))
    write(root / "boundary_GT" / "c.bmp", np.zeros((H, W), np.uint8))
    return root


def test_grabcut_layout(tmp_path: Path) -> None:
    ds = build_dataset("grabcut", str(grabcut_folder(tmp_path)), "test")
    assert isinstance(ds, GrabCut) and ds.name == "grabcut" and len(ds) == 3
    a, b, c = ds[0], ds[1], ds[2]
    assert [a.id, b.id, c.id] == ["grabcut/a", "grabcut/b", "grabcut/c"]
    np.testing.assert_array_equal(a.image, bgr(0)[..., ::-1])  # BGR file -> RGB sample
    assert a.image.dtype == np.uint8 and a.depth is None and a.depth_kind == "disparity"
    assert a.masks.shape == (1, H, W) and a.masks.dtype == np.int8
    expected = np.zeros((H, W), np.int8)
    expected[8:32, 18:42] = -1
    expected[10:30, 20:40] = 1
    np.testing.assert_array_equal(a.masks[0], expected)
    np.testing.assert_array_equal(b.masks[0], expected)
    assert c.masks.shape == (0, H, W)  # empty mask: K=0


def test_real_grabcut(grabcut_root: Path) -> None:
    ds = GrabCut(grabcut_root)
    assert len(ds) == 50
    seen: set[int] = set()
    for sample in ds:
        assert sample.masks.shape == (1, *sample.image.shape[:2]) and sample.image.shape[2] == 3
        values = set(np.unique(sample.masks).tolist())
        assert values <= {-1, 0, 1} and 1 in values
        seen |= values
    assert seen == {-1, 0, 1}


# Stored mask value -> decoded value under GrabCut's rule (Berkeley's too): 128 ignore, > 128 or exactly 1 object.
GRABCUT_RULE = {0: 0, 1: 1, 2: 0, 127: 0, 128: -1, 129: 1, 200: 1, 255: 1}


@pytest.mark.parametrize("cls, images, masks", [(GrabCut, "data_GT", "boundary_GT"), (Berkeley, "images", "masks")])
def test_grabcut_rule_decodes_grabcut_and_berkeley(tmp_path: Path, cls: type, images: str, masks: str) -> None:
    stored = np.zeros((H, W, 3), np.uint8)
    for col, value in enumerate(GRABCUT_RULE):
        stored[:, col, 0] = value  # channel 0 (OpenCV order) decides
    stored[:, len(GRABCUT_RULE), 1:] = 255  # other channels alone: background
    write(tmp_path / images / "x.jpg", bgr(0))
    write(tmp_path / masks / "x.png", stored)
    decoded = cls(tmp_path)[0].masks[0]
    assert decoded[0, : len(GRABCUT_RULE)].tolist() == list(GRABCUT_RULE.values())
    assert (decoded[:, len(GRABCUT_RULE):] == 0).all()
    assert Berkeley.decode is GrabCut.decode  # one decoding for both


def test_berkeley_layout_uses_channel_0(tmp_path: Path) -> None:
    mask = square_mask(255, channels=3)
    mask[0:5, 0:5, 2] = 255  # red only (OpenCV channel 2): not the object
    write(tmp_path / "images" / "x.jpg", bgr(0))
    write(tmp_path / "masks" / "x.png", mask)
    ds = Berkeley(tmp_path)
    assert len(ds) == 1 and ds[0].id == "berkeley/x"
    np.testing.assert_array_equal(ds[0].masks[0], square_mask(1).astype(np.int8))


def test_davis_layout_uses_max_over_channels(tmp_path: Path) -> None:
    mask = np.zeros((H, W, 3), np.uint8)
    mask[10:30, 20:40, 2] = 200  # object only in channel 2
    write(tmp_path / "img" / "f1.jpg", bgr(0))
    write(tmp_path / "gt" / "f1.png", mask)
    write(tmp_path / "img" / "f2.jpg", bgr(1))
    write(tmp_path / "gt" / "f2.png", square_mask(1))
    rgba = np.dstack([square_mask(255, channels=3), np.full((H, W), 255, np.uint8)])
    write(tmp_path / "img" / "f3.jpg", bgr(2))
    write(tmp_path / "gt" / "f3.png", rgba)  # an opaque alpha channel is not the object
    ds = build_dataset("davis", str(tmp_path), "val")
    assert isinstance(ds, Davis) and len(ds) == 3
    for sample in ds:
        np.testing.assert_array_equal(sample.masks[0], square_mask(1).astype(np.int8))


def coco_json(path: Path, image_dir: Path, lvis: bool = False) -> Path:
    """Image 1 (60x80): polygon object, RLE object, crowd region, small object; image 2: small object only;
    image 3: crowd only. With ``lvis``, images carry ``coco_url`` instead of ``file_name``."""
    h, w = 60, 80
    rle_mask = np.zeros((h, w), np.uint8, order="F")
    rle_mask[30:60, 40:80] = 1  # 1200 px
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    rle["counts"] = rle["counts"].decode("ascii")
    crowd = [10.0, 40.0, 30.0, 40.0, 30.0, 60.0, 10.0, 60.0]  # x,y polygon: cols 10..30, rows 40..60
    images = [{"id": k, "height": h, "width": w} for k in (1, 2, 3)]
    for image in images:
        name = f"{image['id']:012d}.jpg"
        image.update({"coco_url": f"http://images.cocodataset.org/val2017/{name}"} if lvis else {"file_name": name})

    def ann(i: int, image_id: int, segm: object, area: float, crowd_flag: int = 0) -> dict:
        a = {"id": i, "image_id": image_id, "category_id": 1, "segmentation": segm, "area": area, "bbox": [0, 0, 1, 1]}
        if not lvis:
            a["iscrowd"] = crowd_flag
        return a

    anns = [
        ann(1, 1, [[0.0, 0.0, 40.0, 0.0, 40.0, 30.0, 0.0, 30.0]], 1200.0),  # polygon, rows 0..30, cols 0..40
        ann(2, 1, rle, float(mask_utils.area(rle))),
        ann(3, 1, [[60.0, 0.0, 70.0, 0.0, 70.0, 10.0, 60.0, 10.0]], 100.0),  # a small object
        ann(5, 2, [[0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0]], 100.0),
    ]
    if not lvis:
        anns += [ann(4, 1, [crowd], 400.0, crowd_flag=1), ann(6, 3, [crowd], 400.0, crowd_flag=1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    for k in (1, 2, 3):
        write(image_dir / f"{k:012d}.jpg", bgr(k, h, w))
    return path


def test_build_dataset_unknown_name_lists_known() -> None:
    with pytest.raises(DataError) as err:
        build_dataset("no_such_set", "x", "train")
    assert all(name in str(err.value) for name in DATASETS)
    known = {"grabcut", "berkeley", "davis", "coco_mval", "sbd", "pascalvoc", "folder", "hqseg44k", "coco", "lvis",
             "layered"}
    assert known <= set(DATASETS)  # more may be registered later


def test_error_missing_mask_names_image(tmp_path: Path) -> None:
    image = write(tmp_path / "data_GT" / "lonely.jpg", bgr(0))
    (tmp_path / "boundary_GT").mkdir()
    with pytest.raises(DataError, match=re.escape(str(image))):
        GrabCut(tmp_path)


def test_error_size_mismatch_names_mask(tmp_path: Path) -> None:
    write(tmp_path / "images" / "x.png", bgr(0))
    mask = write(tmp_path / "masks" / "x.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(DataError, match=re.escape(str(mask))):
        Berkeley(tmp_path)[0]


@pytest.mark.parametrize("broken", ["image", "mask"])
def test_error_unreadable_file_names_it(tmp_path: Path, broken: str) -> None:
    image = write(tmp_path / "img" / "x.jpg", bgr(0))
    mask = write(tmp_path / "gt" / "x.png", square_mask())
    path = image if broken == "image" else mask
    path.write_bytes(b"not an image")
    with pytest.raises(DataError, match=re.escape(str(path))):
        Davis(tmp_path)[0]


def test_error_coco_image_size_mismatch_names_file(tmp_path: Path) -> None:
    ds = COCOInstances(coco_json(tmp_path / "instances.json", tmp_path / "images"), tmp_path / "images")
    image = write(tmp_path / "images" / "000000000001.jpg", bgr(0, 10, 10))
    with pytest.raises(DataError, match=re.escape(str(image))):
        ds[0]


def test_depth_files_roundtrip_png_and_missing(tmp_path: Path) -> None:
    depth = np.random.default_rng(0).random((H, W)).astype(np.float32)
    write_depth(tmp_path / "d" / "a.npy", depth)
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["a.npy"]  # no temp file left
    np.testing.assert_array_equal(read_depth(tmp_path / "d", "a"), depth)
    write(tmp_path / "d" / "b.png", (depth * 65535).astype(np.uint16))
    png = read_depth(tmp_path / "d", "b")
    assert png.dtype == np.float32 and np.abs(png - depth).max() < 1e-4
    with pytest.raises(DataError) as err:
        read_depth(tmp_path / "d", "c")
    assert str(tmp_path / "d" / "c.npy") in str(err.value) and str(tmp_path / "d" / "c.png") in str(err.value)
    write(tmp_path / "e" / "b.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DataError, match="16-bit"):  # an 8-bit PNG is not a depth file
        read_depth(tmp_path / "e", "b")


def test_depth_folder_wrapper(tmp_path: Path) -> None:
    ds = GrabCut(grabcut_folder(tmp_path / "grabcut"))
    for k, stem in enumerate("abc"):
        write_depth(tmp_path / "depth" / f"{stem}.npy", np.full((H, W), k, np.float32))
    wrapped = DepthFolder(ds, tmp_path / "depth", depth_kind="depth")
    assert len(wrapped) == 3 and wrapped.name == "grabcut"
    sample = wrapped[1]
    assert sample.depth_kind == "depth" and sample.depth.shape == (H, W) and (sample.depth == 1).all()
    np.testing.assert_array_equal(sample.masks, ds[1].masks)
    write_depth(tmp_path / "depth" / "c.npy", np.zeros((H, W + 2), np.float32))
    with pytest.raises(DataError, match="depth size"):
        wrapped[2]
