"""The named evaluation sets of the isegm suite (COCO-MVal, SBD, PASCAL VOC) and the user ``folder`` layout: each
test writes a miniature tree in the published layout (file and folder names, encodings) and checks counts, ids
and decoded masks."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image
from torch.utils.data import ConcatDataset

from ois_lightning.data import (
    DATASETS,
    SBD,
    CocoMVal,
    DataError,
    Davis,
    PascalVOC,
    UserFolder,
    build_dataset,
    collect_problems,
)
from ois_lightning.data.sbd import bbox_fill
from ois_lightning.data.splits import FOLDERS

H, W = 40, 60


def bgr(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def write_list(path: Path, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\n" for name in names))


def test_registry_has_the_eval_sets_and_their_folders() -> None:
    for name, folder in [("coco_mval", "COCO_MVal"), ("sbd", "SBD"), ("pascalvoc", "PascalVOC"), ("folder", "Folder")]:
        assert name in DATASETS and FOLDERS[name] == folder


# COCO-MVal ---------------------------------------------------------------------------------------------------------


def test_coco_mval_davis_layout_and_own_ids(tmp_path: Path) -> None:
    mask = np.zeros((H, W, 3), np.uint8)
    mask[10:30, 20:40, 1] = 255  # object in one channel only: DAVIS's max-over-channels rule
    for root in (tmp_path / "COCO_MVal", tmp_path / "DAVIS"):
        write(root / "img" / "000000001.jpg", bgr(0))
        write(root / "gt" / "000000001.png", mask)
    ds = build_dataset("coco_mval", str(tmp_path / "COCO_MVal"), "test")
    assert isinstance(ds, CocoMVal) and isinstance(ds, Davis) and ds.name == "coco_mval" and len(ds) == 1
    sample = ds[0]
    assert sample.id == "coco_mval/000000001" and sample.masks.shape == (1, H, W)
    expected = np.zeros((H, W), np.int8)
    expected[10:30, 20:40] = 1
    np.testing.assert_array_equal(sample.masks[0], expected)
    both = ConcatDataset([build_dataset("davis", str(tmp_path / "DAVIS"), "test"), ds])
    assert [s.id for s in both] == ["davis/000000001", "coco_mval/000000001"]


# SBD ---------------------------------------------------------------------------------------------------------------

# Instance ids of the SBD image "2008_000001" (rows/cols of a 40x60 map): 1 a filled square; 2 seven pixels in a
# 10x10 box (fill 0.07, below isegm's 0.08: dropped in train); 3 eight pixels in a 10x10 box (fill 0.08: kept).
SPARSE_7 = [(20, 0), (29, 9), (20, 9), (29, 0), (25, 5), (24, 4), (23, 3)]
SPARSE_8 = [*[(r, c + 40) for r, c in SPARSE_7], (26, 46)]


def sbd_segmentation() -> np.ndarray:
    seg = np.zeros((H, W), np.uint8)  # H,W
    seg[2:12, 2:14] = 1
    for r, c in SPARSE_7:
        seg[r, c] = 2
    for r, c in SPARSE_8:
        seg[r, c] = 3
    return seg


def write_sbd_mat(path: Path, seg: np.ndarray, categories: list[int]) -> None:
    """A .mat shaped like SBD's inst files: struct GTinst with Segmentation (uint8 ids), Boundaries (a cell of
    sparse boundary maps, one per instance) and Categories (uint8 class per instance)."""
    boundaries = np.empty((len(categories), 1), dtype=object)
    for k in range(len(categories)):
        boundaries[k, 0] = scipy.sparse.csc_matrix(seg == k + 1)
    gtinst = {"Segmentation": seg, "Boundaries": boundaries, "Categories": np.array(categories, np.uint8)[:, None]}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"GTinst": gtinst})


def sbd_tree(root: Path) -> Path:
    """img/ + inst/ for "2008_000001" (three instances) and "2008_000002" (one); val lists the first, train both."""
    write(root / "img" / "2008_000001.jpg", bgr(0))
    write_sbd_mat(root / "inst" / "2008_000001.mat", sbd_segmentation(), [15, 15, 9])
    second = np.zeros((H, W), np.uint8)
    second[5:25, 5:25] = 1
    write(root / "img" / "2008_000002.jpg", bgr(1))
    write_sbd_mat(root / "inst" / "2008_000002.mat", second, [7])
    write_list(root / "val.txt", ["2008_000001"])
    write_list(root / "train.txt", ["2008_000001", "2008_000002"])
    return root


def test_sbd_mat_mirrors_the_published_structure(tmp_path: Path) -> None:
    write_sbd_mat(tmp_path / "x.mat", sbd_segmentation(), [15, 15, 9])
    gtinst = scipy.io.loadmat(str(tmp_path / "x.mat"))["GTinst"]
    assert gtinst.shape == (1, 1) and gtinst.dtype.names == ("Segmentation", "Boundaries", "Categories")
    np.testing.assert_array_equal(gtinst[0][0][0], sbd_segmentation())  # isegm's positional read: same field
    assert gtinst["Segmentation"][0, 0].dtype == np.uint8
    np.testing.assert_array_equal(SBD.read_ids(tmp_path / "x.mat"), sbd_segmentation())


def test_bbox_fill_is_area_over_inclusive_box() -> None:
    seg = sbd_segmentation()
    assert bbox_fill(seg == 1) == 1.0
    assert bbox_fill(seg == 2) == pytest.approx(0.07) and bbox_fill(seg == 3) == pytest.approx(0.08)


def test_sbd_val_keeps_every_instance(tmp_path: Path) -> None:
    ds = build_dataset("sbd", str(sbd_tree(tmp_path)), "val")
    assert isinstance(ds, SBD) and ds.name == "sbd" and len(ds) == 1
    sample = ds[0]
    assert sample.id == "sbd/2008_000001" and sample.masks.shape == (3, H, W) and sample.masks.dtype == np.int8
    seg = sbd_segmentation()
    for k, mask in enumerate(sample.masks, start=1):
        np.testing.assert_array_equal(mask, (seg == k).astype(np.int8))
    assert [s.id for s in build_dataset("sbd", str(tmp_path), "test")] == ["sbd/2008_000001"]  # test = val list


def test_sbd_train_drops_instances_below_8_percent_of_their_box(tmp_path: Path) -> None:
    ds = build_dataset("sbd", str(sbd_tree(tmp_path)), "train")
    assert [s.id for s in ds] == ["sbd/2008_000001", "sbd/2008_000002"]
    seg = sbd_segmentation()
    first = ds[0].masks
    assert first.shape == (2, H, W)  # instance 2 (fill 0.07) dropped, 3 (fill 0.08) kept
    np.testing.assert_array_equal(first[0], (seg == 1).astype(np.int8))
    np.testing.assert_array_equal(first[1], (seg == 3).astype(np.int8))
    assert ds[1].masks.shape == (1, H, W)
    assert SBD(tmp_path, "train", min_bbox_fill=0.0)[0].masks.shape == (3, H, W)


def test_sbd_missing_and_unreadable_files(tmp_path: Path) -> None:
    sbd_tree(tmp_path)
    mat = tmp_path / "inst" / "2008_000002.mat"
    mat.unlink()
    with pytest.raises(DataError, match=re.escape(str(mat))):
        SBD(tmp_path, "train")
    with collect_problems() as problems:
        ds = SBD(tmp_path, "train")
    assert [s.id for s in ds] == ["sbd/2008_000001"] and len(problems) == 1 and str(mat) in str(problems[0])
    bad = tmp_path / "inst" / "2008_000001.mat"
    bad.write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=re.escape(str(bad))):
        ds[0]
    with pytest.raises(DataError, match="unknown split"):
        SBD(tmp_path, "trainval")
    (tmp_path / "val.txt").unlink()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "val.txt"))):
        SBD(tmp_path, "val")


# PASCAL VOC --------------------------------------------------------------------------------------------------------


def voc_palette() -> list[int]:
    """The VOC colour map (index i -> bits of i spread over R, G, B), flattened for ``putpalette``."""
    palette = []
    for i in range(256):
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((i >> (3 * bit + channel)) & 1) << (7 - bit)
        palette += rgb
    return palette


def write_voc_png(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids, mode="P")
    image.putpalette(voc_palette())
    image.save(path)


def voc_objects() -> np.ndarray:
    """Instance 1 (a square in a 255 border), instance 2 (a rectangle), 255 elsewhere on one row."""
    ids = np.zeros((H, W), np.uint8)  # H,W
    ids[4:20, 4:20] = 255
    ids[6:18, 6:18] = 1
    ids[25:35, 30:50] = 2
    ids[38, :] = 255
    return ids


def voc_tree(root: Path) -> Path:
    write(root / "JPEGImages" / "2007_000032.jpg", bgr(0))
    write_voc_png(root / "SegmentationObject" / "2007_000032.png", voc_objects())
    write(root / "JPEGImages" / "2007_000039.jpg", bgr(1))
    single = (voc_objects() == 2).astype(np.uint8)  # one instance, id 1
    write_voc_png(root / "SegmentationObject" / "2007_000039.png", single)
    write_list(root / "ImageSets" / "Segmentation" / "val.txt", ["2007_000032"])
    write_list(root / "ImageSets" / "Segmentation" / "train.txt", ["2007_000039"])
    write_list(root / "ImageSets" / "Segmentation" / "trainval.txt", ["2007_000032", "2007_000039"])
    return root


def test_voc_png_is_a_palette_image_with_voc_colours(tmp_path: Path) -> None:
    write_voc_png(tmp_path / "x.png", voc_objects())
    with Image.open(tmp_path / "x.png") as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.array(image), voc_objects())
        rgb = np.array(image.convert("RGB"))
    assert tuple(rgb[10, 10]) == (128, 0, 0) and tuple(rgb[30, 40]) == (0, 128, 0)
    assert tuple(rgb[5, 5]) == (224, 224, 192)  # the void colour of index 255


@pytest.mark.parametrize("decode", ["grey", "index"])
def test_pascalvoc_instances_and_ignore(tmp_path: Path, decode: str) -> None:
    """Indices 1 and 2 have distinct grey values (38, 75): both decodings give the annotation's partition."""
    ds = build_dataset("pascalvoc", str(voc_tree(tmp_path)), "val", decode=decode)
    assert isinstance(ds, PascalVOC) and ds.name == "pascalvoc" and len(ds) == 1
    sample = ds[0]
    assert sample.id == "pascalvoc/2007_000032" and sample.masks.shape == (2, H, W)
    ids = voc_objects()
    for k, mask in enumerate(sample.masks, start=1):
        expected = (ids == k).astype(np.int8)
        expected[ids == 255] = -1  # the void band is ignore in every instance
        np.testing.assert_array_equal(mask, expected)


def test_pascalvoc_split_lists(tmp_path: Path) -> None:
    voc_tree(tmp_path)
    assert [s.id for s in PascalVOC(tmp_path)] == ["pascalvoc/2007_000032"]  # val by default
    assert [s.id for s in build_dataset("pascalvoc", str(tmp_path), "test")] == ["pascalvoc/2007_000032"]
    train = PascalVOC(tmp_path, "train")
    assert [s.id for s in train] == ["pascalvoc/2007_000039"] and train[0].masks.shape == (1, H, W)
    assert len(PascalVOC(tmp_path, "trainval")) == 2


def voc_grey(index: int) -> int:
    """The grey value isegm's loader sees for a VOC palette index: ITU-R BT.601 luma of its colour, rounded."""
    r, g, b = voc_palette()[3 * index:3 * index + 3]
    return int(np.floor(0.299 * r + 0.587 * g + 0.114 * b + 0.5))


def test_pascalvoc_grey_decoding_merges_instances_as_isegm(tmp_path: Path) -> None:
    """isegm reads the PNG as colour and converts it to grey: 25 instances give 21 objects (1/16, 3/18, 6/21 and
    9/24 share a grey value); ``decode="index"`` keeps all 25."""
    ids = np.zeros((H, W), np.uint8)
    for k in range(1, 26):
        ids[(k - 1) // 5 * 8:(k - 1) // 5 * 8 + 6, (k - 1) % 5 * 12:(k - 1) % 5 * 12 + 10] = k
    ids[-1, :] = 255
    write(tmp_path / "JPEGImages" / "many.jpg", bgr(2))
    write_voc_png(tmp_path / "SegmentationObject" / "many.png", ids)
    write_list(tmp_path / "ImageSets" / "Segmentation" / "val.txt", ["many"])
    greys = sorted({voc_grey(k) for k in range(1, 26)})
    assert len(greys) == 21 and voc_grey(255) == 220
    grey = PascalVOC(tmp_path)[0]  # the default, as data.pascalvoc_decode
    assert grey.masks.shape == (21, H, W)
    for mask, value in zip(grey.masks, greys):  # ascending grey value, as np.unique orders them
        members = [k for k in range(1, 26) if voc_grey(k) == value]
        expected = np.isin(ids, members).astype(np.int8)
        expected[-1, :] = -1  # grey 220, the void band: ignore
        np.testing.assert_array_equal(mask, expected)
    assert [len([k for k in range(1, 26) if voc_grey(k) == v]) for v in greys].count(2) == 4
    index = PascalVOC(tmp_path, decode="index")[0]
    assert index.masks.shape == (25, H, W) and (index.masks[:, -1] == -1).all()
    with pytest.raises(DataError, match="decode='rgb'"):
        PascalVOC(tmp_path, decode="rgb")


def test_pascalvoc_missing_and_non_palette_files(tmp_path: Path) -> None:
    voc_tree(tmp_path)
    png = tmp_path / "SegmentationObject" / "2007_000032.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(png)  # an RGB re-save loses the indices
    with pytest.raises(DataError, match=re.escape(str(png))):
        PascalVOC(tmp_path, decode="index")[0]
    assert PascalVOC(tmp_path)[0].masks.shape == (0, H, W)  # isegm's grey reading takes any colour PNG
    png.unlink()
    with pytest.raises(DataError, match=re.escape(str(png))):
        PascalVOC(tmp_path)
    with collect_problems() as problems:
        assert len(PascalVOC(tmp_path, "trainval")) == 1
    assert len(problems) == 1


# folder ------------------------------------------------------------------------------------------------------------


def square(value: int, rows: slice, cols: slice, channels: int = 0) -> np.ndarray:
    mask = np.zeros((H, W, channels) if channels else (H, W), np.uint8)
    mask[rows, cols] = value
    return mask


def test_folder_single_and_per_object_masks(tmp_path: Path) -> None:
    write(tmp_path / "images" / "one.jpg", bgr(0))
    write(tmp_path / "masks" / "one.png", square(255, slice(5, 15), slice(5, 15)))
    write(tmp_path / "images" / "multi.png", bgr(1))
    write(tmp_path / "masks" / "multi_0.png", square(1, slice(0, 10), slice(0, 10)))
    write(tmp_path / "masks" / "multi_1.png", square(200, slice(20, 30), slice(30, 50), channels=3))
    write(tmp_path / "masks" / "multi_2.png", np.zeros((H, W), np.uint8))  # object-free: left out
    write(tmp_path / "masks" / "multi_4.png", square(255, slice(0, 5), slice(0, 5)))  # after a gap: not read
    ds = build_dataset("folder", str(tmp_path), "test")
    assert isinstance(ds, UserFolder) and ds.name == "folder" and len(ds) == 2
    multi, one = ds[0], ds[1]
    assert [multi.id, one.id] == ["folder/multi", "folder/one"]
    np.testing.assert_array_equal(one.masks, (square(1, slice(5, 15), slice(5, 15)) > 0)[None].astype(np.int8))
    assert multi.masks.shape == (2, H, W) and multi.masks.dtype == np.int8
    np.testing.assert_array_equal(multi.masks[0], square(1, slice(0, 10), slice(0, 10)).astype(np.int8))
    np.testing.assert_array_equal(multi.masks[1], square(1, slice(20, 30), slice(30, 50)).astype(np.int8))


def test_folder_problems(tmp_path: Path) -> None:
    write(tmp_path / "images" / "a.jpg", bgr(0))
    write(tmp_path / "masks" / "a.png", square(255, slice(5, 15), slice(5, 15)))
    lonely = write(tmp_path / "images" / "lonely.bmp", bgr(1))
    with pytest.raises(DataError, match=re.escape(str(lonely))):
        UserFolder(tmp_path)
    with collect_problems() as problems:
        ds = UserFolder(tmp_path)
    assert [s.id for s in ds] == ["folder/a"] and len(problems) == 1
    lonely.unlink()
    mask = write(tmp_path / "masks" / "a.png", np.zeros((H + 2, W), np.uint8))
    with pytest.raises(DataError, match=re.escape(str(mask))):
        UserFolder(tmp_path)[0]
