"""Training samples: one target object per image, augmented, with its initial clicks (paper App. A.1).

:class:`TrainingSamples` turns any :class:`SegDataset` into fixed-size tensors for the training loop. Every random
choice of a sample (a dataset's own draw, see :mod:`.draw`; the augmentation; which object; whether objects
merge; the initial clicks) is drawn from ``sample_rng(seed, epoch, index)``, so a run is the same whatever the
number of dataloader workers or ranks.
The epoch reaches the workers inside the index itself (:class:`EpochSampler` yields ``epoch * N + i``).
"""
from __future__ import annotations

import bisect
import itertools
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DistributedSampler

from ..protocol.clicks import sample_initial_clicks, sample_rng
from ..config.schema import ConfigError
from .base import IGNORE, DataError, Sample, SegDataset
from .draw import draw_sample
from .transforms import Pipeline, apply

MAX_SKIPS = 64  # skip_empty: consecutive images without a target tolerated before giving up with an error
MAX_TRIES = 64  # augmentations of one image in a row that leave no object pixel before giving up with an error


class TrainingSamples(torch.utils.data.Dataset):
    """Training items from one or more datasets.

    Item ``epoch * N + i`` is image ``i`` (of the concatenated datasets) in ``epoch``: a dict of
    ``image`` (3,S,S) float in [0,1], ``gt`` (1,S,S) float in {1,0,-1} (-1 = ignore, padding and warp fill),
    ``coords`` (K,2) float (y,x) and ``labels`` (K,) long (1 pos / 0 neg / -1 empty slot) with
    K = max_pos + max_neg, ``index`` (the item index), ``skipped`` (images passed over to reach this one, with
    ``skip_empty``) and, when ``with_depth``, ``depth`` (1,S,S) float and ``depth_kind``.

    Target choice (isegm protocol: SamsungLabs/ritm_interactive_segmentation, ``isegm/data/base.py``
    ``ISDataset.augment_sample`` / ``__getitem__``, ``isegm/data/sample.py`` and ``isegm/data/points_sampler.py``):
    all instance masks are augmented together; while no object keeps a pixel the same image is augmented again,
    unless that result is kept with probability ``keep_background_prob``. Objects with fewer than ``min_area``
    object pixels *after* the augmentation are not targets; with a hierarchy (``Sample.parents``) the targets
    are the usable objects without a usable ancestor (isegm re-attaches the children of a removed object to its
    parent). With probability ``merge_prob`` two targets form one; all other objects (small ones included: isegm
    keeps their pixels out of the background) give the negative pool "other objects". Without a target the
    item has an empty target (gt 0, negative clicks only, on pixels of no object), as isegm's sampler gives for
    an empty sample. ``skip_empty`` restores the rule of earlier versions: an image without a target is
    passed over for the next one (``skipped`` counts it), and an empty target never occurs.
    """

    def __init__(
        self,
        datasets: list[SegDataset],
        transform: Pipeline,
        seed: int,
        with_depth: bool,
        max_pos: int = 24,
        max_neg: int = 24,
        min_area: int = 1000,
        merge_prob: float = 0.15,
        keep_background_prob: float = 0.05,
        skip_empty: bool = False,
    ) -> None:
        self.data = ConcatDataset(datasets)
        self.transform, self.seed, self.with_depth = transform, seed, with_depth
        self.max_pos, self.max_neg = max_pos, max_neg
        self.min_area, self.merge_prob = min_area, merge_prob
        self.keep_background_prob, self.skip_empty = keep_background_prob, skip_empty

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: int) -> dict:
        epoch, i = divmod(int(item), len(self.data))
        for skipped in range(MAX_SKIPS if self.skip_empty else 1):
            index = (i + skipped) % len(self.data)
            rng = sample_rng(self.seed, epoch, index)
            out = self._make(self._draw(index, rng), rng)
            if out is not None:
                out.update(index=item, skipped=skipped)
                return out
        raise RuntimeError(f"{MAX_SKIPS} consecutive training images from index {i} have no usable object "
                           f"(objects of at least {self.min_area} px after augmentation): check the masks")

    def _draw(self, index: int, rng: np.random.Generator) -> Sample:
        """Image ``index`` of the concatenated datasets, read by :func:`.draw.draw_sample` with the item's rng."""
        k = bisect.bisect_right(self.data.cumulative_sizes, index)
        start = self.data.cumulative_sizes[k - 1] if k else 0
        return draw_sample(self.data.datasets[k], index - start, rng)

    def _augment(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """The augmented sample; augmented again while no object keeps a pixel, unless kept with probability
        ``keep_background_prob`` (isegm ``ISDataset.augment_sample``; ``skip_empty``: the first augmentation)."""
        has_object = bool((sample.masks == 1).any())
        for _ in range(MAX_TRIES):
            self.transform.set_seed(int(rng.integers(2**31)))
            out, _ = apply(self.transform, sample)  # all K instance masks move with the image
            if self.skip_empty or (out.masks == 1).any():
                return out
            if not has_object:  # no augmentation gives an object: isegm tries until it keeps one, i.e. any one
                if self.keep_background_prob > 0:
                    return out
                raise DataError(f"{sample.id}: no object pixel, and data.keep_background_prob=0 never keeps an "
                                "empty target (expected a probability > 0, or data.skip_empty=true)")
            if rng.random() < self.keep_background_prob:
                return out
        raise RuntimeError(f"{sample.id}: {MAX_TRIES} augmentations in a row left no object pixel "
                           f"(data.keep_background_prob={self.keep_background_prob}): check the masks")

    def _choose_target(self, sample: Sample, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        """Augmented sample -> (target (H,W) int8 in {1,0,-1}, other objects (H,W) bool), or None without a
        target (:func:`targets`)."""
        masks = sample.masks  # K,H,W
        usable = targets((masks == 1).sum(axis=(1, 2)), sample.parents, max(self.min_area, 1))
        if usable.size == 0:
            return None
        chosen = [int(rng.choice(usable))]
        if usable.size > 1 and rng.random() < self.merge_prob:
            chosen.append(int(rng.choice(np.setdiff1d(usable, chosen))))
        target = np.zeros(masks.shape[1:], np.int8)
        target[(masks[chosen] == IGNORE).any(0)] = IGNORE
        target[(masks[chosen] == 1).any(0)] = 1
        others = np.delete(masks, chosen, axis=0)
        return target, (others == 1).any(0) if len(others) else np.zeros(target.shape, bool)

    def _make(self, sample: Sample, rng: np.random.Generator) -> dict | None:
        if self.with_depth and sample.depth is None:
            raise DataError(f"{sample.id}: no depth map, but data.depth.source needs one "
                            "(use data.depth.source=model, or a dataset/folder that provides depth)")
        out = self._augment(sample, rng)
        chosen = self._choose_target(out, rng)
        if chosen is None and self.skip_empty:
            return None
        # an empty target: isegm's gt is all 0 and its clicks avoid every labelled pixel (objects, ignore bands)
        gt, others = chosen or (np.zeros(out.image.shape[:2], np.int8), (out.masks != 0).any(0))
        gt[~out.valid] = IGNORE
        clicks = sample_initial_clicks(gt, rng, others, self.max_pos, self.max_neg)
        n = self.max_pos + self.max_neg
        coords, labels = np.zeros((n, 2), np.float32), np.full(n, -1, np.int64)
        for k, c in enumerate(clicks):
            coords[k], labels[k] = (c.y, c.x), int(c.positive)
        item = {
            "image": torch.from_numpy(out.image).permute(2, 0, 1).float().div(255),  # 3,S,S
            "gt": torch.from_numpy(gt.astype(np.float32))[None],  # 1,S,S
            "coords": torch.from_numpy(coords),
            "labels": torch.from_numpy(labels),
        }
        if self.with_depth:
            item["depth"] = torch.from_numpy(np.ascontiguousarray(out.depth, np.float32))[None]
            item["depth_kind"] = sample.depth_kind
        return item


def targets(areas: np.ndarray, parents: np.ndarray | None, min_area: int) -> np.ndarray:
    """Indices of the objects that can be targets: ``areas`` (K,) >= ``min_area`` and, with ``parents`` (K,)
    (-1 = root), no ancestor that also is: removing an object re-attaches its children to its parent
    (isegm ``DSample._remove_object``), so a child is a root once every ancestor was removed."""
    keep = areas >= min_area  # K

    def covered(k: int) -> bool:
        p = int(parents[k])
        while p >= 0 and not keep[p]:
            p = int(parents[p])
        return p >= 0

    return np.array([k for k in np.flatnonzero(keep) if parents is None or not covered(k)], np.int64)


class EpochSampler(DistributedSampler):
    """Shuffled (seeded), rank-sharded indices, each offset by ``epoch * N`` so the items know their epoch.

    A ``DistributedSampler`` so that Lightning keeps it under DDP and calls :meth:`set_epoch` every epoch;
    with one process it is a seeded shuffle. :meth:`resume_at` makes the next pass over an epoch start after the
    indices a resumed run has already trained on.
    """

    def __init__(self, dataset: TrainingSamples, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self._resume: tuple[int, int] | None = None  # (epoch, indices of this rank to skip once)

    def resume_at(self, epoch: int, skip: int) -> None:
        """Skip this rank's first ``skip`` indices the next time epoch ``epoch`` is iterated."""
        self._resume = (epoch, skip)

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * len(self.dataset)
        indices = super().__iter__()
        if self._resume is not None and self._resume[0] == self.epoch:
            indices = itertools.islice(indices, self._resume[1], None)
            self._resume = None
        return (offset + i for i in indices)


def per_device_batch(global_batch: int, world_size: int) -> int:
    """The global batch divided over the processes; a ConfigError if it does not divide evenly."""
    if global_batch % world_size:
        raise ConfigError(f"data.batch_size={global_batch} is not divisible by the world size {world_size} "
                         f"(devices x nodes); choose a multiple of {world_size}")
    return global_batch // world_size

