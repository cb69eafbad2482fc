"""isegm COCO+LVIS (pickled layers, hierarchy, stuff, allow-list), COCO / LVIS JSON and their union, and the
training wrapper's target choice: min area after augmentation, merging, the dataset's own draw from the item rng."""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from ois_lightning.config.load import load_config
from ois_lightning.data import (
    COCOInstances,
    CocoLvis,
    DataError,
    DepthFolder,
    InstanceUnion,
    LVISInstances,
    build_dataset,
    build_eval_transform,
    write_depth,
)
from ois_lightning.data.splits import FOLDERS, build_split, train_datasets
from ois_lightning.data.training import TrainingSamples

from .helpers import MASKED_SIZE, MaskedImages, REPO, TINY


H, W = MASKED_SIZE


def box(rows: slice, cols: slice, h: int = H, w: int = W) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[rows, cols] = True
    return mask


PARENT, CHILD = box(slice(0, 20), slice(0, 30)), box(slice(5, 25), slice(10, 35))  # the child sticks out below
OTHER, STUFF = box(slice(25, 40), slice(40, 60)), box(slice(30, 40), slice(0, 20))


def write_image(path: Path, value: int, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))


def write_masks(path: Path, layers: list[np.ndarray], mapping: list[tuple[int, int]]) -> None:
    """isegm's ``masks/<image_id>.pickle``: PNG-encoded layers and per instance (layer, mask_id)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = [cv2.imencode(".png", layer)[1] for layer in layers]
    with path.open("wb") as f:
        pickle.dump((encoded, mapping), f)


def cocolvis_tree(root: Path, split: str = "train") -> Path:
    """Image 000001: root 0 with child 1 (on a uint16 layer, id 300), root 2, stuff 3; image 000002: one root;
    image 000003: stuff only."""
    folder = root / split
    layer0, layer1 = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint16)
    layer0[PARENT], layer0[OTHER], layer0[STUFF] = 1, 2, 3
    layer1[CHILD] = 300
    write_masks(folder / "masks" / "000001.pickle", [layer0, layer1], [(0, 1), (1, 300), (0, 2), (0, 3)])
    write_masks(folder / "masks" / "000002.pickle", [OTHER.astype(np.uint8) * 7], [(0, 7)])
    write_masks(folder / "masks" / "000003.pickle", [STUFF.astype(np.uint8) * 5], [(0, 5)])
    for k, image_id in enumerate(("000001", "000002", "000003")):
        write_image(folder / "images" / f"{image_id}.jpg", 60 * (k + 1))
    hannotation = {
        "000001": {"hierarchy": {0: {"parent": None, "children": [1], "node_level": 0},
                                 1: {"parent": 0, "children": [], "node_level": 1}, 2: None},
                   "num_instance_masks": 3},
        "000002": {"hierarchy": {0: None}, "num_instance_masks": 1},
        "000003": {"hierarchy": {}, "num_instance_masks": 0},
    }
    with (folder / "hannotation.pickle").open("wb") as f:
        pickle.dump(hannotation, f)
    return root


def test_cocolvis_layout_roots_are_their_own_masks_and_stuff_is_erased(tmp_path: Path) -> None:
    ds = build_dataset("cocolvis", str(cocolvis_tree(tmp_path)), "train")
    assert isinstance(ds, CocoLvis) and ds.name == "cocolvis" and len(ds) == 3
    first, second, stuff_only = ds[0], ds[1], ds[2]
    assert [first.id, second.id, stuff_only.id] == ["cocolvis/000001", "cocolvis/000002", "cocolvis/000003"]
    assert first.image.shape == (H, W, 3) and abs(int(first.image.mean()) - 60) <= 2
    assert first.masks.shape == (2, H, W) and first.masks.dtype == np.int8  # roots only: 0 and 2
    # isegm's target of a root is its own mask (DSample.get_object_mask): the part of child 1 outside it is not
    np.testing.assert_array_equal(first.masks[0], PARENT.astype(np.int8))
    assert first.parents is None
    drawn = CocoLvis(build_dataset("cocolvis", str(tmp_path), "train").folder.parent).draw(0, np.random.default_rng(0))
    assert drawn.parents.tolist() == [-1, 0, -1]  # the training read: every instance and its parent
    np.testing.assert_array_equal(drawn.masks, np.stack([PARENT, CHILD, OTHER]).astype(np.int8))
    np.testing.assert_array_equal(first.masks[1], OTHER.astype(np.int8))
    assert not first.masks[:, STUFF].any()  # stuff: background
    np.testing.assert_array_equal(second.masks, OTHER[None].astype(np.int8))
    assert stuff_only.masks.shape == (0, H, W)


def test_stuff_drawn_from_the_items_rng(tmp_path: Path) -> None:
    root = cocolvis_tree(tmp_path)
    always = CocoLvis(root, stuff_prob=1.0)
    drawn = always.draw(0, np.random.default_rng(0))
    assert drawn.masks.shape == (4, H, W) and drawn.parents.tolist() == [-1, 0, -1, -1]  # stuff 3: a root object
    np.testing.assert_array_equal(drawn.masks[3], STUFF.astype(np.int8))
    np.testing.assert_array_equal(always[0].masks, drawn.masks[[0, 2]])  # ds[i]: the roots, never stuff
    assert CocoLvis(root, stuff_prob=0.0).draw(0, np.random.default_rng(0)).masks.shape == (3, H, W)
    some = CocoLvis(root, stuff_prob=0.3)
    draws = [len(some.draw(0, np.random.default_rng(s)).masks) == 4 for s in range(400)]
    assert 0.2 < np.mean(draws) < 0.4
    assert draws == [len(some.draw(0, np.random.default_rng(s)).masks) == 4 for s in range(400)]


def test_allow_list_relative_to_split_or_absolute(tmp_path: Path) -> None:
    root = cocolvis_tree(tmp_path)
    (root / "train" / "allow.json").write_text(json.dumps(["000001", "000003"]))
    assert [s.id for s in CocoLvis(root, allow_list="allow.json")] == ["cocolvis/000001", "cocolvis/000003"]
    assert len(CocoLvis(root, allow_list=root / "train" / "allow.json")) == 2
    (root / "train" / "bad.json").write_text("{}")
    with pytest.raises(DataError, match=re.escape(str(root / "train" / "bad.json"))):
        CocoLvis(root, allow_list="bad.json")


def test_bad_cocolvis_files_are_named(tmp_path: Path) -> None:
    root = cocolvis_tree(tmp_path)
    with pytest.raises(DataError, match=re.escape(str(root / "val" / "hannotation.pickle"))):
        CocoLvis(root, split="val")
    masks = root / "train" / "masks" / "000002.pickle"
    write_masks(masks, [OTHER.astype(np.uint8)], [])  # instance 0 has no (layer, mask_id)
    with pytest.raises(DataError, match=re.escape(str(masks))):
        CocoLvis(root)[1]
    masks.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=re.escape(str(masks))):
        CocoLvis(root)[1]


def cfg_with(*extra: str):
    return load_config(REPO / "experiments" / "tiny.yaml", [*TINY, "data.depth.source=model", *extra])


def test_cocolvis_registry_folder_and_config_keys(tmp_path: Path) -> None:
    root = cocolvis_tree(tmp_path / "COCO_LVIS")
    (root / "train" / "allow.json").write_text(json.dumps(["000002", "000003"]))
    assert FOLDERS["cocolvis"] == "COCO_LVIS"
    cfg = cfg_with(f"data.root={tmp_path}", "data.stuff_prob=0.5", "data.cocolvis_allow_list=allow.json")
    ds = build_split(cfg, "cocolvis", "train")
    assert isinstance(ds, CocoLvis) and ds.stuff_prob == 0.5 and len(ds) == 2
    assert cfg_with().data.stuff_prob == 0.3 and cfg_with().data.cocolvis_allow_list is None




SMALL = box(slice(0, 20), slice(0, 25))  # 500 px
BIG = box(slice(10, 40), slice(20, 60))  # 1200 px


def targets(ds: TrainingSamples, epochs: int = 12) -> list[torch.Tensor]:
    return [ds[e * len(ds)]["gt"][0] for e in range(epochs)]


def test_min_area_is_counted_after_augmentation() -> None:
    up = TrainingSamples([MaskedImages([SMALL])], build_eval_transform(120), seed=0, with_depth=False, min_area=1000)
    item = up[0]  # 500 px in the file, 2000 px at twice the size: a target
    assert item["skipped"] == 0 and int((item["gt"] == 1).sum()) == 2000
    down = TrainingSamples([MaskedImages([BIG], [SMALL])], build_eval_transform(30), seed=0, with_depth=False,
                           min_area=1000, skip_empty=True)
    with pytest.raises(RuntimeError, match="after augmentation"):
        down[0]  # 1200 px in the file, 300 px at half the size: no target anywhere
    mixed = TrainingSamples([MaskedImages([BIG, SMALL])], build_eval_transform(60), seed=0, with_depth=False,
                            min_area=1000, merge_prob=1.0)
    for gt in targets(mixed):  # the small object is never a target, nor merged into one
        assert torch.equal(gt[:H] == 1, torch.from_numpy(BIG))


def test_merged_target_is_the_union_of_two_objects() -> None:
    other = box(slice(0, 10), slice(0, 60))  # 600 px
    ds = TrainingSamples([MaskedImages([BIG, other, box(slice(12, 40), slice(0, 18))])], build_eval_transform(60), seed=0,
                         with_depth=False, min_area=100, merge_prob=1.0)
    for gt in targets(ds):
        assert int((gt == 1).sum()) in (1200 + 600, 1200 + 504, 600 + 504)


def test_training_reads_the_datasets_own_draw_with_the_item_rng(tmp_path: Path) -> None:
    root = cocolvis_tree(tmp_path)
    stuff_only = torch.from_numpy(STUFF)
    never = TrainingSamples([CocoLvis(root, stuff_prob=0.0)], build_eval_transform(60), seed=0, with_depth=False,
                            min_area=100, skip_empty=True)
    assert never[2]["skipped"] == 1  # image 000003 has only stuff: skipped (wraps to 000001)
    always = TrainingSamples([CocoLvis(root, stuff_prob=1.0)], build_eval_transform(60), seed=0, with_depth=False,
                             min_area=100)
    item = always[2]
    assert item["skipped"] == 0 and torch.equal(item["gt"][0, :H] == 1, stuff_only)
    half = TrainingSamples([MaskedImages([BIG]), CocoLvis(root, stuff_prob=0.5)], build_eval_transform(60), seed=3,
                           with_depth=False, min_area=100, skip_empty=True)
    skips = [half[e * len(half) + 3]["skipped"] for e in range(40)]  # item 3 = image 000003 of the second dataset
    assert 0 < sum(s == 0 for s in skips) < 40  # stuff drawn in some epochs only ...
    assert skips == [half[e * len(half) + 3]["skipped"] for e in range(40)]  # ... as a function of the item
    for k, image_id in enumerate(("000001", "000002", "000003")):
        write_depth(tmp_path / "depth" / f"{image_id}.npy", np.full((H, W), k, np.float32))
    wrapped = DepthFolder(CocoLvis(root, stuff_prob=1.0), tmp_path / "depth")
    drawn = wrapped.draw(2, np.random.default_rng(0))
    assert drawn.masks.shape == (1, H, W) and (drawn.depth == 2).all()  # the wrapper keeps the draw


def coco_json(path: Path, image_dir: Path, lvis: bool = False, ids: tuple[int, ...] = (1, 2, 3)) -> Path:
    """COCO: image 1 (60x80) with a polygon, an RLE object, a small object and a crowd region; image 2 a small
    object only; image 3 a crowd only. LVIS (``coco_url``, no crowd): one polygon on each of ``ids``."""
    h, w = 60, 80
    images = []
    for k in ids:
        name = f"{k:012d}.jpg"
        images.append({"id": k, "height": h, "width": w,
                       **({"coco_url": f"http://images.cocodataset.org/train2017/{name}"} if lvis else
                          {"file_name": name})})
        write_image(image_dir / name, 30 * k, h, w)

    def ann(i: int, image_id: int, segm: object, crowd: int = 0) -> dict:
        return {"id": i, "image_id": image_id, "category_id": 1, "segmentation": segm, "area": 1.0,
                "bbox": [0, 0, 1, 1], **({} if lvis else {"iscrowd": crowd})}

    square = [[0.0, 0.0, 40.0, 0.0, 40.0, 30.0, 0.0, 30.0]]  # rows 0..30, cols 0..40
    if lvis:
        anns = [ann(100 + k, k, square) for k in ids]
    else:
        rle = mask_utils.encode(np.asfortranarray(box(slice(30, 60), slice(40, 80), h, w).astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        crowd = [[10.0, 40.0, 30.0, 40.0, 30.0, 60.0, 10.0, 60.0]]  # cols 10..30, rows 40..60
        small = [[60.0, 0.0, 70.0, 0.0, 70.0, 10.0, 60.0, 10.0]]
        anns = [ann(1, 1, square), ann(2, 1, rle), ann(3, 1, small), ann(4, 1, crowd, 1), ann(5, 2, small),
                ann(6, 3, crowd, 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    return path


def test_coco_objects_small_kept_and_crowd_is_background(tmp_path: Path) -> None:
    ds = COCOInstances(coco_json(tmp_path / "instances.json", tmp_path / "images"), tmp_path / "images")
    assert [s.id for s in ds] == ["coco/000000000001", "coco/000000000002"]  # image 3 (crowd only) dropped
    sample = ds[0]
    assert sample.masks.shape == (3, 60, 80) and set(np.unique(sample.masks).tolist()) == {0, 1}
    polygon, rle, small = sample.masks == 1
    assert polygon[5:25, 5:35].all() and not polygon[35:].any() and rle.sum() == 1200 and 0 < small.sum() < 200
    assert not sample.masks[:, 45:55, 15:25].any()  # crowd: background in every mask, never an object


def test_lvis_coco_url_and_registry(tmp_path: Path) -> None:
    coco_json(tmp_path / "annotations" / "lvis_v1_val.json", tmp_path / "images", lvis=True, ids=(1, 2))
    ds = build_dataset("lvis", str(tmp_path), "val")
    assert isinstance(ds, LVISInstances) and [s.id for s in ds] == ["lvis/000000000001", "lvis/000000000002"]
    assert ds[0].masks.shape == (1, 60, 80)


def test_coco_and_lvis_train_as_one_stream_over_the_union_of_images(tmp_path: Path) -> None:
    coco_json(tmp_path / "COCO" / "annotations" / "instances_train2017.json", tmp_path / "COCO" / "train2017")
    coco_json(tmp_path / "LVIS" / "annotations" / "lvis_v1_train.json", tmp_path / "LVIS" / "images", lvis=True,
              ids=(1, 4))
    cfg = cfg_with(f"data.root={tmp_path}", "data.train=[layered,coco,lvis]")
    layered, union = train_datasets(cfg)
    assert layered.name == "layered" and isinstance(union, InstanceUnion) and union.name == "coco+lvis"
    assert [s.id for s in union] == [f"coco+lvis/{k:012d}" for k in (1, 2, 4)]  # one Sample per image id
    first = union[0]
    coco, lvis = build_split(cfg, "coco", "train")[0], build_split(cfg, "lvis", "train")[0]
    np.testing.assert_array_equal(first.masks, np.concatenate([coco.masks, lvis.masks]))  # COCO's, then LVIS's
    np.testing.assert_array_equal(first.image, coco.image)
    samples = TrainingSamples([union], build_eval_transform(80), seed=0, with_depth=False, min_area=100)
    assert len(samples) == 3
    assert [d.name for d in train_datasets(cfg_with(f"data.root={tmp_path}", "data.train=[coco]"))] == ["coco"]


def test_union_refuses_images_of_different_sizes(tmp_path: Path) -> None:
    coco = COCOInstances(coco_json(tmp_path / "c.json", tmp_path / "images"), tmp_path / "images")
    lvis_file = coco_json(tmp_path / "l.json", tmp_path / "other", lvis=True, ids=(1,))
    lvis_file.write_text(lvis_file.read_text().replace('"height": 60', '"height": 61'))
    union = InstanceUnion([coco, LVISInstances(lvis_file, tmp_path / "other")])
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "l.json"))):
        union[0]


def test_split_groups_unite_coco_and_lvis_in_the_train_split_only() -> None:
    from omegaconf import OmegaConf

    from ois_lightning.data.splits import split_groups

    cfg = OmegaConf.create({"data": {"train": ["layered", "lvis", "davis", "coco"], "test": ["coco", "lvis"]}})
    assert split_groups(cfg, "train") == [["layered"], ["lvis", "coco"], ["davis"]]
    assert split_groups(cfg, "test") == [["coco"], ["lvis"]]
    cfg.data.train = ["coco", "layered"]
    assert split_groups(cfg, "train") == [["coco"], ["layered"]]
