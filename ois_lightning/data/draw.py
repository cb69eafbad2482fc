"""The training read of a dataset. A dataset whose Sample has a random part of its own (isegm COCO+LVIS: whether
stuff regions are objects) defines ``draw(i, rng)`` and takes that choice from ``rng``, the generator of the
training item (``ois_lightning.protocol.clicks.sample_rng``), so it depends on (seed, epoch, index) only and not on the
dataloader worker; ``ds[i]`` stays the deterministic read. :func:`draw_sample` falls back to ``ds[i]``."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .base import Sample, SegDataset


@runtime_checkable
class Draws(Protocol):
    """A dataset with a training read that draws its random choices from the item's generator."""

    def draw(self, i: int, rng: np.random.Generator) -> Sample: ...


def draw_sample(dataset: SegDataset, i: int, rng: np.random.Generator) -> Sample:
    """``dataset.draw(i, rng)`` where the dataset defines it, else ``dataset[i]``."""
    return dataset.draw(i, rng) if isinstance(dataset, Draws) else dataset[i]
