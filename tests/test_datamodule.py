"""OISDataModule: batch layout, worker-count independence, depth sources, skipped images, batch per device."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ois_lightning.config.load import load_config
from ois_lightning.data import Sample, SegDataset, build_eval_transform, build_train_transform, write_depth
from ois_lightning.data.training import EpochSampler, TrainingSamples, per_device_batch
from ois_lightning.lit.datamodule import OISDataModule
from ois_lightning.data.splits import build_split, dataset_root

from .helpers import REPO, TINY


SIZE = 112


def tiny_cfg(*extra: str):
    return load_config(REPO / "experiments" / "tiny.yaml", [*TINY, f"model.input_size={SIZE}",
                       "data.layered.size=96", "data.layered.train_length=16", "data.batch_size=4",
                       "data.min_object_area=50", *extra])


def first_batch(cfg) -> dict:
    dm = OISDataModule(cfg)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_batch_layout_and_values():
    batch = first_batch(tiny_cfg())
    assert batch["image"].shape == (4, 3, SIZE, SIZE) and batch["image"].dtype == torch.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["gt"].shape == (4, 1, SIZE, SIZE)
    assert set(batch["gt"].unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert (batch["gt"] == 1).flatten(1).any(1).all()  # every sample has its target
    assert batch["coords"].shape == (4, 48, 2) and batch["labels"].shape == (4, 48)
    assert (batch["labels"][:, 0] == 1).all()  # at least one positive, positives first
    assert batch["depth"].shape == (4, 1, SIZE, SIZE) and batch["depth_kind"] == ["disparity"] * 4
    for b in range(4):  # positive clicks on the target, negatives off it
        for (y, x), label in zip(batch["coords"][b].long().tolist(), batch["labels"][b].tolist()):
            if label >= 0:
                assert batch["gt"][b, 0, y, x] == label


def test_same_first_batch_with_0_and_2_workers():
    a = first_batch(tiny_cfg("data.num_workers=0"))
    b = first_batch(tiny_cfg("data.num_workers=2"))
    for key in ("image", "gt", "coords", "labels", "depth", "index"):
        assert torch.equal(a[key], b[key]), key
    c = first_batch(tiny_cfg("seed=1"))
    assert not torch.equal(a["coords"], c["coords"])


def test_epoch_changes_clicks_and_augmentation_but_not_the_image_order_seeding():
    cfg = tiny_cfg()
    dm = OISDataModule(cfg)
    dm.setup("fit")
    ds = dm.train_set
    assert ds[3]["index"] == 3 and ds[len(ds) + 3]["index"] == len(ds) + 3
    assert not torch.equal(ds[3]["coords"], ds[len(ds) + 3]["coords"])  # epoch 1 draws anew
    assert torch.equal(ds[3]["coords"], ds[3]["coords"])  # ... deterministically
    sampler = EpochSampler(ds, num_replicas=1, rank=0, seed=0)
    sampler.set_epoch(2)
    assert min(sampler) >= 2 * len(ds)


def test_ranks_split_the_epoch():
    cfg = tiny_cfg()
    dm = OISDataModule(cfg)
    dm.setup("fit")
    shards = [list(EpochSampler(dm.train_set, num_replicas=2, rank=r, seed=0)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 8 and not set(shards[0]) & set(shards[1])


def test_resumed_sampler_skips_this_ranks_trained_indices_once():
    cfg = tiny_cfg()
    dm = OISDataModule(cfg)
    dm.setup("fit")
    for rank in (0, 1):
        sampler = EpochSampler(dm.train_set, num_replicas=2, rank=rank, seed=0)
        sampler.set_epoch(1)
        full = list(sampler)
        sampler.resume_at(1, 3)
        assert list(sampler) == full[3:]  # this rank's shard, minus what it trained
        assert list(sampler) == full  # only once
        sampler.resume_at(0, 3)  # a resume point in another epoch does not touch this one
        assert list(sampler) == full


def test_global_batch_divided_by_world_size():
    assert per_device_batch(8, 1) == 8 and per_device_batch(8, 4) == 2
    with pytest.raises(ValueError, match="data.batch_size=8 is not divisible by the world size 3"):
        per_device_batch(8, 3)


class _Images(SegDataset):
    """Three 64x64 images; image 1 has no object."""

    name = "fake"

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> Sample:
        masks = np.zeros((1, 64, 64), np.int8)
        if i != 1:
            masks[0, 10:50, 10:50] = 1
        return Sample(np.full((64, 64, 3), 100, np.uint8), masks if i != 1 else masks[:0], None, f"fake/{i}")


def test_object_free_image_is_skipped_counted_and_warned_at_epoch_end():
    """data.skip_empty (the rule before isegm's keep_background_prob): the next image is taken and counted."""
    ds = TrainingSamples([_Images()], build_train_transform(64), seed=0, with_depth=False, min_area=100,
                         skip_empty=True)
    item = ds[1]
    assert item["skipped"] == 1 and item["index"] == 1 and (item["gt"] == 1).any()
    cfg = tiny_cfg()
    dm = OISDataModule(cfg)
    dm.on_after_batch_transfer({"skipped": torch.tensor([0, 1, 2])}, 0)
    with pytest.warns(UserWarning, match="3 training images had no object"):
        assert dm.end_epoch() == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dm.end_epoch() == 0


def test_padding_is_ignore():
    ds = TrainingSamples([_Images()], build_eval_transform(128), seed=0, with_depth=False, min_area=100)
    gt = ds[0]["gt"][0]  # 64x64 image resized to 128: no padding
    assert (gt >= 0).all()
    ds = TrainingSamples([_Images()], build_eval_transform(64), seed=0, with_depth=False, min_area=100)
    ds.data.datasets[0].__class__ = _TallImages
    gt = ds[0]["gt"][0]  # 64x32 image padded on the right to 64x64
    assert (gt[:, 32:] == -1).all() and (gt[:, :32] >= 0).all()


class _TallImages(_Images):
    def __getitem__(self, i: int) -> Sample:
        s = super().__getitem__(i)
        return Sample(s.image[:, :32].copy(), s.masks[:, :, :32].copy(), None, s.id)


def test_depth_needed_but_missing_is_a_clear_error():
    ds = TrainingSamples([_Images()], build_train_transform(64), seed=0, with_depth=True, min_area=100)
    with pytest.raises(ValueError, match="fake/0: no depth map"):
        ds[0]


def _write_davis(root: Path, n: int = 2) -> None:
    (root / "img").mkdir(parents=True)
    (root / "gt").mkdir()
    for i in range(n):
        image = np.zeros((60, 80, 3), np.uint8)
        image[10:50, 20:70] = (40 * i, 200, 90)
        mask = np.zeros((60, 80), np.uint8)
        mask[10:50, 20:70] = 255
        cv2.imwrite(str(root / "img" / f"f{i}.jpg"), image)
        cv2.imwrite(str(root / "gt" / f"f{i}.png"), mask)


def test_file_depth_source_and_dataset_paths(tmp_path: Path):
    davis = tmp_path / "my_davis"
    _write_davis(davis)
    for i in range(2):
        write_depth(tmp_path / "depth" / "davis" / f"f{i}.npy", np.full((60, 80), 0.25 * (i + 1), np.float32))
    cfg = tiny_cfg("data.train=[davis]", "data.test=[davis]", f"data.paths.davis={davis}",
                   "data.depth.source=file", f"data.depth.folder={tmp_path / 'depth'}", "data.depth.kind=depth",
                   "data.batch_size=2")
    assert dataset_root(cfg, "davis") == str(davis)
    assert dataset_root(cfg, "grabcut") == str(Path("data") / "GrabCut")
    batch = first_batch(cfg)
    assert batch["depth_kind"] == ["depth", "depth"]
    test = build_split(cfg, "davis", "test")[0]
    assert test.depth.shape == (60, 80) and test.depth_kind == "depth"
    no_order = tiny_cfg("data.train=[davis]", "data.test=[davis]", f"data.paths.davis={davis}",
                        "data.depth.source=file", f"data.depth.folder={tmp_path / 'nowhere'}", "data.batch_size=2",
                        "model.order.enabled=false")  # a row that reads no depth needs no depth files
    assert OISDataModule(no_order).with_depth is False and "depth" not in first_batch(no_order)
    assert build_split(no_order, "davis", "test")[0].depth is None


def test_file_depth_source_without_folder_is_rejected():
    cfg = tiny_cfg("data.depth.source=file")
    with pytest.raises(ValueError, match="data.depth.folder"):
        OISDataModule(cfg).setup("fit")


def test_val_loader_reads_only_the_images_validation_uses():
    dm = OISDataModule(tiny_cfg("train.val_objects=3", "data.layered.val_length=8"))
    assert len(dm.val_dataloader()) == 3
