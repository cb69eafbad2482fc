"""The allowed values of the configuration schema (:mod:`ois_lightning.config.schema`): a range for every int /
float key, the choices of fixed-choice string keys, the lists that need an entry and the free-text keys.
:mod:`ois_lightning.config.checks` checks a loaded config against them; a test fails on a field without an entry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Range:
    """Allowed numbers: from ``lo`` to ``hi`` (either end open or absent), or one of ``also``."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple[float, ...] = ()

    def __contains__(self, value: float) -> bool:
        below = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        above = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        return value in self.also or not (below or above)

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            text = f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{'>' if self.lo_open else '>='} {self.lo:g}"
        else:
            text = f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return text + "".join(f" or {a:g}" for a in self.also)


COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY = Range(1), Range(0), Range(0, lo_open=True), Range(0, 1)
# every int / float field (a test fails on one without an entry); null is always allowed where the type is Optional
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**32 - 1),
    "model.input_size": COUNT, "model.order.sigma_init": POSITIVE,
    "model.sparse.dim": COUNT, "model.sparse.max_pos": COUNT, "model.sparse.max_neg": COUNT,
    "model.sparse.num_blocks": COUNT, "model.sparse.num_heads": COUNT, "model.sparse.ffn_dim": COUNT,
    "model.dense.radius": COUNT,
    "model.depth_encoder.dim": COUNT, "model.depth_encoder.num_blocks": COUNT, "model.depth_encoder.num_heads": COUNT,
    "data.batch_size": COUNT, "data.num_workers": NON_NEGATIVE, "data.min_object_area": NON_NEGATIVE,
    "data.merge_prob": PROBABILITY, "data.stuff_prob": PROBABILITY, "data.keep_background_prob": PROBABILITY,
    "data.layered.size": Range(16), "data.layered.train_length": COUNT, "data.layered.val_length": COUNT,
    "data.layered.test_length": COUNT,
    "clicks.max_extra": NON_NEGATIVE, "clicks.max_eval": COUNT, "clicks.min_eval": COUNT,
    "clicks.target_iou": Range(0, 1, lo_open=True), "clicks.threshold": Range(0, 1, lo_open=True, hi_open=True),
    "eval.max_objects": COUNT, "eval.cache_max_gb": POSITIVE, "eval.zoom_in_size": COUNT, "eval.threads": COUNT,
    "train.lr": POSITIVE, "train.weight_decay": NON_NEGATIVE, "train.max_steps": Range(1, also=(-1,)),
    "train.max_epochs": Range(1, also=(-1,)), "train.num_nodes": COUNT, "train.val_every_n_steps": COUNT,
    "train.val_objects": NON_NEGATIVE, "train.gradient_clip_val": POSITIVE, "train.log_every_n_steps": COUNT,
    "train.threads": COUNT, "logger.log_images": NON_NEGATIVE,
}
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "16", "bf16", "64")  # Lightning's Trainer(precision=...)
# string keys with fixed choices that stay plain strings (they go to Lightning or into files as text)
CHOICES: dict[str, tuple[str, ...]] = {
    "train.precision": PRECISIONS,
    "train.accelerator": ("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
    "eval.precision": ("32-true", "bf16-mixed", "16-mixed"),
    "data.depth.kind": ("disparity", "depth"),
    "data.depth.preprocess": ("official", "input"),
    "data.pascalvoc_decode": ("grey", "index"),
}
NON_EMPTY = ("data.train", "data.test")  # lists that need at least one entry
# string keys without fixed choices (paths, names); with CHOICES and checks.REGISTRIES every string field
FREE_TEXT = ("base", "name", "table", "row", "output_dir", "ckpt", "ckpt_path", "weights", "model.backbone.checkpoint",
             "data.root", "data.paths", "data.cocolvis_allow_list", "data.depth.folder", "data.depth.checkpoint",
             "eval.feature_cache", "logger.project", "logger.group", "logger.tags", "logger.name")
