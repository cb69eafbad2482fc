"""``ois depth-cache CONFIG [overrides]``: precompute depth maps with a depth model (paper App. A.9, Table 6).

For every dataset of the chosen split (``data.test`` by default), each image goes through the depth model as
``data.depth.preprocess`` says: "official" (default) as the model's own inference code prepares it (Depth
Anything's ``infer_image``: shorter side 518), or "input" with its longer side at ``model.input_size`` (sides
rounded to the model's multiple). The map is resized back to the image resolution and written atomically as
``data.depth.folder/<dataset>/<stem>.npy`` -- the layout ``data.depth.source=file`` reads. Files already written
are skipped, so an interrupted run resumes. Each dataset folder records the model, the preprocessing and the
depth convention in ``depth_meta.json``; ``DepthFolder`` refuses a folder whose recorded kind differs from
``data.depth.kind``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from ..config.schema import ConfigError, DepthSource
from . import DataError, SegDataset, write_depth
from .depth import read_depth_meta, write_depth_meta


def depth_model_choice(cfg: DictConfig) -> tuple[str, str | None]:
    """(depth model name, checkpoint): ``data.depth.model`` or else the backbone's own depth head."""
    from ..model.specs import get_spec

    d = cfg.data.depth
    if d.model is not None:
        return d.model, d.checkpoint
    if not get_spec(cfg.model.backbone.name).has_depth_head:
        raise ConfigError(f"model.backbone.name={cfg.model.backbone.name} has no depth head: set data.depth.model")
    return cfg.model.backbone.name, cfg.model.backbone.checkpoint


def _datasets(cfg: DictConfig, split: str) -> list[SegDataset]:
    """The raw datasets of ``data.<split>`` (no depth folder applied: that is what we are writing)."""
    from .splits import build_group, split_groups

    raw = copy.deepcopy(cfg)
    raw.data.depth.source = DepthSource.model
    groups = split_groups(cfg, split)
    if not groups:
        raise ConfigError(f"data.{split} is empty: name at least one dataset")
    return [build_group(raw, group, split) for group in groups]


def cache_depth(cfg: DictConfig, split: str = "test", device: str | None = None) -> dict[str, int]:
    """Write the depth maps of ``data.<split>``; returns {"written": n, "skipped": m}."""
    from ..model.depth_models import PREPROCESS, build_depth_model
    from ..model.specs import depth_model_kind

    if cfg.data.depth.folder is None:
        raise ConfigError("ois depth-cache writes to data.depth.folder: set it (e.g. data.depth.folder=depth/zoedepth)")
    name, checkpoint = depth_model_choice(cfg)
    preprocess = cfg.data.depth.preprocess
    if preprocess not in PREPROCESS:
        raise ConfigError(f"data.depth.preprocess={preprocess!r} is not one of {PREPROCESS}")
    side = int(cfg.model.input_size) if preprocess == "input" else None
    meta = {"kind": depth_model_kind(name), "model": name, "checkpoint": checkpoint, "preprocess": preprocess,
            "side": side}
    datasets = _datasets(cfg, split)
    folders = [Path(cfg.data.depth.folder) / ds.name for ds in datasets]
    for folder in folders:
        old = read_depth_meta(folder)
        if old is not None and old != meta:
            raise DataError(f"{folder}: holds depth maps of {old} (this run: {meta}); use another data.depth.folder")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = None  # built only when something is left to compute
    counts = {"written": 0, "skipped": 0}
    for ds, folder in zip(datasets, folders):
        write_depth_meta(folder, meta)
        seen: dict[str, str] = {}
        for i in tqdm(range(len(ds)), desc=f"depth-cache {ds.name} ({name})", unit="img"):
            sample = ds[i]
            stem = sample.id.rsplit("/", 1)[-1]
            if stem in seen:
                raise DataError(f"{folder}: samples {seen[stem]} and {sample.id} share the file stem {stem!r}")
            seen[stem] = sample.id
            path = folder / f"{stem}.npy"
            if path.is_file():
                counts["skipped"] += 1
                continue
            if model is None:
                model = build_depth_model(name, checkpoint, preprocess).to(dev)
            depth, _ = model.predict(sample.image, side)
            write_depth(path, depth)
            counts["written"] += 1
    return counts
