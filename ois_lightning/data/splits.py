"""Dataset splits chosen by config: each dataset's folder (``FOLDERS`` / ``data.paths``), one dataset of a split
with the configured depth source (:func:`build_split`) and the concatenated val / test datasets
(:func:`eval_dataset`). Free of Lightning, so data checks can build splits without it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch.utils.data import ConcatDataset, Dataset

from ..config.schema import ConfigError
from ..model.inputs import uses_depth
from . import DepthFolder, SegDataset, build_dataset
from .base import MissingFile
from .coco import InstanceUnion


FOLDERS = {  # default folder of each dataset under data.root
    "grabcut": "GrabCut",
    "berkeley": "Berkeley",
    "davis": "DAVIS",
    "coco_mval": "COCO_MVal",
    "sbd": "SBD",
    "pascalvoc": "PascalVOC",
    "folder": "Folder",
    "hqseg44k": "HQSeg44K",
    "coco": "COCO",
    "lvis": "LVIS",
    "cocolvis": "COCO_LVIS",
    "layered": "",
}


def dataset_root(cfg: DictConfig, name: str) -> str:
    """Folder of dataset ``name``: ``data.paths[name]`` if set, else ``data.root/FOLDERS[name]``."""
    if name in cfg.data.paths:
        return str(cfg.data.paths[name])
    return str(Path(cfg.data.root) / FOLDERS.get(name, name))


def build_split(cfg: DictConfig, name: str, split: str) -> SegDataset:
    """Dataset ``name`` of ``split`` with the configured depth source applied."""
    return with_depth_source(cfg, read_split(cfg, name, split))


def read_split(cfg: DictConfig, name: str, split: str) -> SegDataset:
    """Dataset ``name`` of ``split`` read from its folder with its own config keys (no depth source yet)."""
    kw: dict[str, Any] = {}
    if name == "layered":
        layered = cfg.data.layered
        kw = dict(length=int(layered[f"{split}_length"]), size=int(layered.size), cues=list(layered.cues))
    elif name == "cocolvis":
        kw = dict(stuff_prob=float(cfg.data.stuff_prob), allow_list=cfg.data.cocolvis_allow_list)
    elif name == "pascalvoc":
        kw = dict(decode=str(cfg.data.pascalvoc_decode))
    return build_dataset(name, dataset_root(cfg, name), split, **kw)


UNITED = ("coco", "lvis")  # training on both is one stream over the union of their images (COCO-format files)


def split_groups(cfg: DictConfig, split: str) -> list[list[str]]:
    """The datasets of ``data.<split>`` as groups of names that make one dataset each: in the train split the
    COCO-format ones (``coco``, ``lvis``) together, at the place of the first; every other name alone."""
    names = [str(n) for n in cfg.data[split]]
    united = [n for n in names if n in UNITED] if split == "train" else []
    if len(united) < 2:
        return [[n] for n in names]
    return [united if n == united[0] else [n] for n in names if n not in united[1:]]


def build_group(cfg: DictConfig, group: list[str], split: str) -> SegDataset:
    """One dataset of :func:`split_groups` with the depth source: a single dataset, or the union of the images
    of COCO-format ones (:class:`~.coco.InstanceUnion`)."""
    parts = [read_split(cfg, name, split) for name in group]
    return with_depth_source(cfg, parts[0] if len(parts) == 1 else InstanceUnion(parts))


def train_datasets(cfg: DictConfig) -> list[SegDataset]:
    """The ``data.train`` datasets with the depth source (:func:`split_groups`)."""
    return [build_group(cfg, group, "train") for group in split_groups(cfg, "train")]


def with_depth_source(cfg: DictConfig, dataset: SegDataset) -> SegDataset:
    """``dataset`` with the depth of ``data.depth.source`` checked or attached, when the model reads depth (rows
    without depth need no depth data): ``gt`` needs a dataset with its own depth maps, ``file`` a folder
    ``data.depth.folder/<dataset name>``; a dataset without either is refused here, before any item is read."""
    depth = cfg.data.depth
    source = depth.source.value
    if source == "model" or not uses_depth(cfg.model):
        return dataset
    if source == "gt":
        if not dataset.has_depth:
            raise ConfigError(f"data.depth.source=gt: dataset {dataset.name} has no depth maps of its own; "
                              "use data.depth.source=model (or file)")
        return dataset
    if depth.folder is None:
        raise ConfigError("data.depth.source=file needs data.depth.folder (a folder of <dataset>/<stem>.npy)")
    folder = Path(depth.folder) / dataset.name
    if not folder.is_dir():
        raise MissingFile(f"{folder}: no depth folder for dataset {dataset.name} (expected <stem>.npy files, e.g. "
                          "from `ois depth-cache`); or use data.depth.source=model")
    return DepthFolder(dataset, folder, depth.kind)


def eval_dataset(cfg: DictConfig, split: str) -> Dataset:
    """The ``data.val`` or ``data.test`` datasets (``split`` "val" / "test") concatenated."""
    names = list(cfg.data[split])
    if not names:
        raise ConfigError(f"data.{split} is empty: name at least one dataset")
    parts = [build_split(cfg, name, split) for name in names]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
