"""Datasets, depth files and augmentations. ``build_dataset(name, root, split)`` builds any registered layout;
``root`` is that dataset's own folder (unused by the generated "layered" scenes)."""
from __future__ import annotations

from typing import Any, Callable

from .base import IGNORE, DataError, MaskedImageFolder, Sample, SegDataset, collect_problems, problem
from .berkeley import Berkeley
from .coco import COCOInstances, InstanceUnion, LVISInstances
from .coco_mval import CocoMVal
from .cocolvis import CocoLvis
from .davis import Davis
from .depth import DepthFolder, read_depth, write_depth
from .folder import UserFolder
from .grabcut import GrabCut
from .hqseg44k import HQSEG44K_SPLITS, HQSeg44K
from .layered import LayeredScenes
from .pascalvoc import PascalVOC
from .sbd import SBD
from .transforms import Pipeline, apply, build_eval_transform, build_train_transform

DATASETS: dict[str, Callable[..., SegDataset]] = {
    "grabcut": GrabCut.from_root,
    "berkeley": Berkeley.from_root,
    "davis": Davis.from_root,
    "coco_mval": CocoMVal.from_root,
    "sbd": SBD.from_root,
    "pascalvoc": PascalVOC.from_root,
    "folder": UserFolder.from_root,
    "hqseg44k": HQSeg44K.from_root,
    "coco": COCOInstances.from_root,
    "lvis": LVISInstances.from_root,
    "cocolvis": CocoLvis.from_root,
    "layered": LayeredScenes.from_root,
}


def build_dataset(name: str, root: str, split: str, **kw: Any) -> SegDataset:
    """The registered dataset ``name`` read from ``root``; ``kw`` goes to its constructor."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (expected one of {', '.join(sorted(DATASETS))})")
    return DATASETS[name](root, split, **kw)


__all__ = [
    "DATASETS",
    "HQSEG44K_SPLITS",
    "IGNORE",
    "Berkeley",
    "COCOInstances",
    "CocoLvis",
    "CocoMVal",
    "DataError",
    "Davis",
    "DepthFolder",
    "GrabCut",
    "HQSeg44K",
    "InstanceUnion",
    "LVISInstances",
    "LayeredScenes",
    "MaskedImageFolder",
    "PascalVOC",
    "Pipeline",
    "SBD",
    "Sample",
    "SegDataset",
    "UserFolder",
    "apply",
    "build_dataset",
    "build_eval_transform",
    "build_train_transform",
    "collect_problems",
    "problem",
    "read_depth",
    "write_depth",
]
