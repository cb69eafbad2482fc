"""Training targets as isegm builds them (``isegm/data/base.py``, ``sample.py``, ``points_sampler.py``): the
re-augmentation of an image whose objects were all lost, ``keep_background_prob`` and empty targets, objects under
``min_object_area`` and the object hierarchy of COCO+LVIS (a child is a target once its ancestors are removed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from ois_lightning.config.load import load_config
from ois_lightning.data import DataError, PascalVOC, Sample, SegDataset, build_eval_transform, build_train_transform
from ois_lightning.data.splits import read_split
from ois_lightning.data.training import TrainingSamples, targets
from ois_lightning.lit.datamodule import OISDataModule
from ois_lightning.lit.module import OISLitModule

from .helpers import MASKED_SIZE, MaskedImages, QUICK, TINY, TINY_YAML

H, W = MASKED_SIZE




def box(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[rows, cols] = True
    return mask


class Fixed(SegDataset):
    """One given Sample."""

    name = "fixed"

    def __init__(self, sample: Sample):
        self.sample = sample

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> Sample:
        return self.sample


CORNER = box(slice(0, 3), slice(0, 3))  # often cropped away by the training transform's RandomCrop
BIG = box(slice(10, 40), slice(20, 60))


def items(ds: TrainingSamples, i: int = 0, epochs: int = 60) -> list[dict]:
    return [ds[e * len(ds) + i] for e in range(epochs)]


def is_empty(item: dict) -> bool:
    return not (item["gt"] == 1).any()


def train_set(keep: float, skip: bool = False, **kw) -> TrainingSamples:
    return TrainingSamples([MaskedImages([CORNER], [BIG])], build_train_transform(60), seed=5, with_depth=False,
                           min_area=1, keep_background_prob=keep, skip_empty=skip, **kw)


def test_an_image_whose_objects_were_cropped_away_is_augmented_again_or_kept_empty() -> None:
    """isegm ``augment_sample``: augment again while no object is left, unless that result is kept with
    ``keep_background_prob``. The first augmentation is the same in every mode (same item generator), so the
    items the old rule skipped are exactly the ones kept empty with probability 1, and never with 0."""
    skipped = [item["skipped"] > 0 for item in items(train_set(0.0, skip=True))]
    assert 0 < sum(skipped) < len(skipped)  # the corner object is lost in some epochs
    kept = items(train_set(1.0))
    assert [is_empty(item) for item in kept] == skipped and all(item["skipped"] == 0 for item in kept)
    again = items(train_set(0.0))
    assert not any(is_empty(item) for item in again)
    assert all(int((item["gt"] == 1).sum()) < 50 for item in again)  # the corner object of image 0, never BIG
    for item, lost in zip(items(train_set(0.05)), skipped):
        assert is_empty(item) <= lost  # an empty target only where the first augmentation lost the object


def test_objects_under_min_area_leave_an_empty_target_with_negatives_off_every_object() -> None:
    """After the augmentation isegm removes objects under ``min_object_area``; with none left the sampler gives
    an empty target and draws every negative from the pixels of no object (even a removed one)."""
    small, other = box(slice(0, 10), slice(0, 10)), box(slice(20, 30), slice(0, 10))  # 100 px each
    masks = np.stack([small, other]).astype(np.int8)
    masks[:, 35] = -1  # an ignore band (VOC's void): isegm's empty gt is 0 there, and no click lands on it
    sample = Sample(np.zeros((H, W, 3), np.uint8), masks, None, "band/0")
    ds = TrainingSamples([Fixed(sample)], build_eval_transform(60), seed=0, with_depth=False, min_area=1000,
                         keep_background_prob=0.0)
    negatives = 0
    for item in items(ds, epochs=20):
        assert is_empty(item) and item["skipped"] == 0 and not (item["labels"] == 1).any()
        assert (item["gt"][0, :H] == 0).all() and (item["gt"][0, H:] == -1).all()  # padding: ignore
        for (y, x), label in zip(item["coords"].long().tolist(), item["labels"].tolist()):
            if label == 0:
                negatives += 1
                assert not (small | other)[y, x] and y != 35 and y < H  # off objects, the band and the padding
    assert negatives > 20


def test_an_image_without_objects_is_kept_empty_or_refused_without_keep_probability() -> None:
    ds = TrainingSamples([MaskedImages([])], build_eval_transform(60), seed=0, with_depth=False, min_area=1,
                         keep_background_prob=0.05)
    assert is_empty(ds[0]) and ds[0]["skipped"] == 0
    never = TrainingSamples([MaskedImages([])], build_eval_transform(60), seed=0, with_depth=False, min_area=1,
                            keep_background_prob=0.0)
    with pytest.raises(DataError, match=r"masked/0: no object pixel.*keep_background_prob=0"):
        never[0]


def test_a_child_is_a_target_once_every_ancestor_is_removed() -> None:
    """isegm ``DSample._remove_object`` re-attaches a removed object's children to its parent, and the sampler
    draws from the roots: 0 -> 1 -> 2 and 3 -> 4."""
    parents = np.array([-1, 0, 1, -1, 3])
    assert targets(np.array([900, 800, 700, 50, 600]), parents, 100).tolist() == [0, 4]
    assert targets(np.array([50, 50, 700, 600, 600]), parents, 100).tolist() == [2, 3]
    assert targets(np.array([50, 800, 700, 50, 0]), parents, 100).tolist() == [1]
    assert targets(np.array([50, 800, 700, 50, 0]), None, 100).tolist() == [1, 2]  # no hierarchy: all roots
    child = box(slice(6, 26), slice(20, 50))  # 600 px, 20% of it outside the root (isegm's conversion allows it)
    tree = Sample(np.zeros((H, W, 3), np.uint8), np.stack([BIG, child]).astype(np.int8), None, "tree/0",
                  parents=np.array([-1, 0]))
    ds = TrainingSamples([Fixed(tree)], build_eval_transform(60), seed=0, with_depth=False, min_area=100,
                         merge_prob=1.0)
    for item in items(ds, epochs=8):  # the root's own mask, never the child nor merged with it
        assert (item["gt"][0, :H] == 1).numpy().tolist() == BIG.tolist()


def test_config_keys_reach_the_training_set_and_the_voc_reader(tmp_path: Path) -> None:
    cfg = load_config(TINY_YAML, TINY)
    assert cfg.data.keep_background_prob == 0.05 and cfg.data.skip_empty is False  # isegm's configs
    assert cfg.data.pascalvoc_decode == "grey"
    cfg = load_config(TINY_YAML, TINY + ["data.pascalvoc_decode=index", "data.paths.pascalvoc=" + str(tmp_path)])
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    voc = read_split(cfg, "pascalvoc", "val")
    assert isinstance(voc, PascalVOC) and voc.decode == "index"
    dm = OISDataModule(load_config(TINY_YAML, TINY + ["data.keep_background_prob=0.5", "data.skip_empty=true"]))
    dm.setup("fit")
    assert dm.train_set.keep_background_prob == 0.5 and dm.train_set.skip_empty is True


def test_an_empty_target_goes_through_a_training_step() -> None:
    """Iterative training on a batch with an empty target (no positive click, gt 0): a finite loss, gradients."""
    cfg = load_config(TINY_YAML, QUICK + ["data.depth.source=model", "clicks.max_extra=3", "seed=1"])
    ds = TrainingSamples([MaskedImages([], [BIG])], build_eval_transform(cfg.model.input_size), seed=1, with_depth=False,
                         min_area=1)
    batch = default_collate([ds[0], ds[1]])
    assert not (batch["gt"][0] == 1).any() and (batch["gt"][1] == 1).any()
    module = OISLitModule(cfg)
    module.model.train()
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer attached
        loss = module.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0
                                        for p in module.model.parameters())
