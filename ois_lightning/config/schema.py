"""Typed configuration: the schema (OmegaConf structured dataclasses); the allowed values are in
:mod:`ois_lightning.config.allowed`.

Every switch of the paper's ablations (Tables 4-11) is a field here, so a table row is a YAML file. Loading
(YAML ``base:`` chain, local layer, overrides) is :mod:`ois_lightning.config.load`, the checks are
:mod:`ois_lightning.config.checks`. Any bad value is a :class:`ConfigError` naming
the file (or "command line"), the key and the value.
"""
from __future__ import annotations

import copy
import enum
import functools
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A configuration problem; the message is one line naming file, key and value."""


class OrderClicks(str, enum.Enum):
    """Which clicks get order maps (paper Table 9)."""

    pos_neg = "pos+neg"
    pos = "pos"
    neg = "neg"


class BlockOrder(str, enum.Enum):
    """Order of the two attentions inside one fusion block (paper Table 7)."""

    object_first = "object_first"
    order_first = "order_first"


class LoggerKind(str, enum.Enum):
    wandb = "wandb"
    csv = "csv"
    none = "none"


class FusionKind(str, enum.Enum):
    """Prompt fusion: OIS's sparse tokens (Sec. 3.4) or a SegNext-style dense self-attention baseline (bench)."""

    ois = "ois"
    dense_self_attention = "dense_self_attention"


class LogitsResolution(str, enum.Enum):
    """Where the decoder's last convolutions run (``model.decoder.logits``)."""

    input = "input"  # DPT as in Depth Anything and the paper: output convolutions at the input resolution
    quarter = "quarter"  # at the decoder's finest grid (4x the patch grid), logits upsampled (SAM, SimpleClick)


class LrSchedule(str, enum.Enum):
    """Learning-rate schedule over the run (``train.lr_schedule``)."""

    constant = "constant"  # the paper states only Adam with lr 5e-5 (Sec. 4.1)
    cosine = "cosine"  # cosine decay from train.lr to 0 over all training steps, stepped every batch


class DepthSource(str, enum.Enum):
    """Where the depth map for order maps comes from (``data.depth.source``)."""

    model = "model"
    file = "file"
    gt = "gt"


@dataclass
class BackboneConfig:
    name: str = "dav2-vitb"  # key of ois_lightning.model.specs.SPECS
    checkpoint: Optional[str] = None  # published checkpoint file (.pth / .safetensors); None: weights.<name>
    freeze: bool = True  # the paper keeps the encoder and depth head frozen (Sec. 4.1)
    # allow random weights (tests, smoke runs): else a published network without a checkpoint is an error
    random_init: bool = False


@dataclass
class OrderConfig:
    enabled: bool = True  # Eq. 3 order-aware attention (off: plain cross-attention, depth unused)
    clicks: OrderClicks = OrderClicks.pos_neg  # Table 9
    sigma_init: float = 5.0  # initial value of the learnable scale sigma in Eq. 3
    write_back: bool = True  # our extension: the token-to-image write-back carries the transposed order bias too


@dataclass
class ObjectConfig:
    enabled: bool = True  # Eq. 4-5 object-aware attention (off: plain cross-attention, previous mask unused)


@dataclass
class SparseConfig:
    enabled: bool = True  # sparse click tokens; off removes both attentions (Table 4 "w/o sparse")
    dim: int = 128  # C in Sec. 4.1
    max_pos: int = 24  # 48 slots: 24 positive then 24 negative (Sec. 4.1)
    max_neg: int = 24
    num_blocks: int = 3
    num_heads: int = 8
    ffn_dim: int = 512
    block_order: BlockOrder = BlockOrder.object_first  # Table 7


@dataclass
class DenseConfig:
    enabled: bool = True  # 2-channel click-disk map -> conv -> added to image features (Sec. 3.4)
    radius: int = 5  # disk radius in input pixels


@dataclass
class DepthEncoderConfig:
    enabled: bool = False  # Table 5: depth fed through an extra encoder and fused with the image features
    dim: int = 256  # width of the depth ViT (ois_lightning/model/depth_encoder.py)
    num_blocks: int = 4
    num_heads: int = 8


@dataclass
class DecoderConfig:
    logits: LogitsResolution = LogitsResolution.input  # docs/benchmarks.md: "quarter" makes a click ~1.5x cheaper


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    input_size: int = 1036  # the paper's "1024" rounded up to a multiple of the patch size 14 (docs/architecture.md)
    fusion: FusionKind = FusionKind.ois
    depth_encoder: DepthEncoderConfig = field(default_factory=DepthEncoderConfig)
    order: OrderConfig = field(default_factory=OrderConfig)
    object: ObjectConfig = field(default_factory=ObjectConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


@dataclass
class DepthConfig:
    source: DepthSource = DepthSource.model
    folder: Optional[str] = None  # for source=file
    kind: str = "disparity"  # for source=file: "disparity" (larger = closer) or "depth" (larger = farther)
    model: Optional[str] = None  # Table 6 depth model (dav2-vitb | dav1-vitb | zoedepth); None = the network's own head
    checkpoint: Optional[str] = None  # weights of data.depth.model (file or HF-format directory); None: weights.<model>
    # how a depth model sees the image: "official" = its own inference code (DA: shorter side 518), "input" = as given
    preprocess: str = "official"


@dataclass
class LayeredDataConfig:
    size: int = 224
    train_length: int = 2000
    val_length: int = 20
    test_length: int = 100
    # monocular depth cues of the generated scenes (ois_lightning/data/monocular.py): [] = occlusion only;
    # [ground, perspective, haze, shading] = every cue (the demo's scenes)
    cues: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    root: str = "data"  # dataset folders default to <root>/<FOLDERS[name]> (ois_lightning.lit.datamodule)
    paths: dict[str, str] = field(default_factory=dict)  # per-dataset folder overrides, e.g. {davis: /data/DAVIS345}
    train: list[str] = field(default_factory=lambda: ["hqseg44k"])
    val: list[str] = field(default_factory=lambda: ["davis"])
    test: list[str] = field(default_factory=lambda: ["davis"])
    batch_size: int = 8  # global batch: divided by the world size
    num_workers: int = 4
    min_object_area: int = 1000  # training: objects smaller after augmentation are not targets (isegm protocol)
    merge_prob: float = 0.15  # training: probability that two objects of an image form one target
    keep_background_prob: float = 0.05  # training: keep an augmentation without objects (empty target), else redo
    skip_empty: bool = False  # training: pass over an image without a target for the next one (never an empty one)
    stuff_prob: float = 0.3  # cocolvis training: probability that a sample's stuff regions are objects (RITM)
    cocolvis_allow_list: Optional[str] = None  # cocolvis: JSON list of image ids to keep (relative to <root>/<split>)
    pascalvoc_decode: str = "grey"  # pascalvoc: objects by isegm's grey value of the colours, or "index" (palette)
    depth: DepthConfig = field(default_factory=DepthConfig)
    layered: LayeredDataConfig = field(default_factory=LayeredDataConfig)


THRESHOLD = 0.49  # prediction = prob > threshold (isegm protocol): clicks.threshold's default


@dataclass
class ClicksConfig:
    max_extra: int = 3  # training: 0..max_extra clicks simulated from the model's own predictions
    max_eval: int = 20  # evaluation: clicks per object
    target_iou: Optional[float] = None  # evaluation: stop an object at IoU >= target (isegm early stop); None = never
    min_eval: int = 1  # evaluation: clicks every object runs before the early stop may end it
    threshold: float = THRESHOLD


class EvalResize(str, enum.Enum):
    """How evaluation maps an image to the square model input (``eval.resize``; docs/evaluation.md)."""

    letterbox = "letterbox"  # longest side to model.input_size, top-left pad (our training transform)
    stretch = "stretch"  # the whole image to input_size x input_size, aspect ignored (SegNext)


@dataclass
class EvalConfig:
    max_objects: Optional[int] = None  # evaluate only the first N objects (None = all)
    feature_cache: Optional[str] = None  # folder of cached frozen-encoder features shared across rows (None = off)
    cache_max_gb: float = 20.0
    resize: EvalResize = EvalResize.letterbox
    zoom_in: bool = False  # RITM/SimpleClick ZoomIn: from click 2 the model sees (and encodes) a crop of the object
    # zoom-in crop input side (None = model.input_size; a patch multiple): RITM 400 (600 on DAVIS), SimpleClick 448
    zoom_in_size: Optional[int] = None
    flip: bool = False  # RITM/SimpleClick: average with the mirrored image's logits (two encodings per image/crop)
    allow_config_mismatch: bool = False  # `ois eval`: evaluate a ckpt trained with other model / protocol keys
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed: autocast around the model in the Predictor
    threads: Optional[int] = None  # torch intra-op threads of `ois eval` (None = cores // local processes)


@dataclass
class TrainConfig:
    lr: float = 5e-5  # Adam (Sec. 4.1)
    lr_schedule: LrSchedule = LrSchedule.constant
    weight_decay: float = 0.0
    max_steps: int = -1
    max_epochs: int = 15
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    val_every_n_steps: Optional[int] = None
    val_objects: int = 8  # objects run through the interactive protocol during validation
    gradient_clip_val: Optional[float] = None
    log_every_n_steps: int = 10
    fast_dev_run: bool = False  # Lightning smoke test: one train + one val batch, no logger/checkpoints
    check_data: bool = True  # build every split first and fail listing its data problems (ois check-data)
    threads: Optional[int] = None  # torch intra-op threads of `ois train` (None = cores // local processes)


@dataclass
class LoggerConfig:
    kind: LoggerKind = LoggerKind.wandb
    project: str = "ois_lightning"
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    name: Optional[str] = None
    log_images: int = 8  # W&B: objects shown with clicks + masks (first ones at validation, worst by NoC90 at test)
    log_checkpoint: bool = True  # W&B: the evaluated checkpoint as a `model` artifact beside the results artifact


def default_run_dir(*, _root_: DictConfig) -> str:
    """The default ``output_dir``: ``runs/<table>/<row>/seed<k>`` for a table row, as ``ois sweep --local`` and
    ``ois table`` lay runs out, else ``runs/<name>/seed<k>``."""
    table, row = _root_.get("table"), _root_.get("row")
    parts = [table, row] if table and row else [_root_.get("name")]
    return "/".join(["runs", *map(str, parts), f"seed{_root_.get('seed')}"])


if not OmegaConf.has_resolver("ois.run_dir"):
    OmegaConf.register_resolver("ois.run_dir", default_run_dir)


@dataclass
class Config:
    base: Optional[str] = None  # YAML file this one extends (relative to this file)
    name: str = "ois"
    table: Optional[str] = None  # ablation table this run belongs to (sweeps / `ois table`)
    row: Optional[str] = None
    seed: int = 0
    output_dir: str = "${ois.run_dir:}"  # runs/<table>/<row>/seed<seed> (the layout `ois table` reads), else
    # runs/<name>/seed<seed> for a config of no table row
    ckpt: Optional[str] = None  # model weights for `ois eval` (a Lightning .ckpt)
    ckpt_path: Optional[str] = None  # resume training: a .ckpt path, or "last" for <output_dir>/checkpoints/last.ckpt
    restart: bool = False  # `ois train` in a folder holding a run: move that run aside (never deleted) and start over
    # this machine's published weights by network name (model.backbone.name / data.depth.model), used where
    # model.backbone.checkpoint / data.depth.checkpoint are null; set in experiments/local.yaml or by env
    weights: dict[str, Optional[str]] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    clicks: ClicksConfig = field(default_factory=ClicksConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


@functools.lru_cache(maxsize=1)
def shared_schema_defaults() -> DictConfig:
    """The schema defaults, built once and read-only: to read from (:func:`schema_defaults` to merge into)."""
    cfg = OmegaConf.structured(Config)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def schema_defaults() -> DictConfig:
    """A fresh, writable config of the schema defaults: a copy of the shared one (building it from the dataclasses
    takes about six times as long as copying it, and every config load starts from it)."""
    cfg = copy.deepcopy(shared_schema_defaults())
    OmegaConf.set_readonly(cfg, None)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def to_dict(cfg: DictConfig) -> dict:
    """Plain dict with enums as their values (for W&B, results.json)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]

