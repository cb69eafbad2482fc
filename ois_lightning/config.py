"""Typed configuration: OmegaConf structured dataclasses + YAML files with a ``base:`` chain + CLI overrides.

Every switch of the paper's ablations (Tables 4-11) is a field here, so a table row is a YAML file.
An unknown key or a value of the wrong type is a :class:`ConfigError` naming the key, the value and the
file (or "command line") it came from.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


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
    name: str = "dav2-vitb"  # key of ois_lightning.model.backbones.SPECS
    checkpoint: Optional[str] = None  # published checkpoint file (.pth / .safetensors); None = random init
    freeze: bool = True  # the paper keeps the encoder and depth head frozen (Sec. 4.1)


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
    checkpoint: Optional[str] = None  # weights of data.depth.model (file or HF-format directory)
    # how a depth model (data.depth.model, or the backbone's head in `ois depth-cache`) sees the image:
    # "official" = the model's own inference code (Depth Anything: shorter side 518), "input" = at the given size
    preprocess: str = "official"


@dataclass
class LayeredDataConfig:
    size: int = 224
    train_length: int = 2000
    val_length: int = 20
    test_length: int = 100


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
    stuff_prob: float = 0.3  # cocolvis training: probability that a sample's stuff regions are objects (RITM)
    cocolvis_allow_list: Optional[str] = None  # cocolvis: JSON list of image ids to keep (relative to <root>/<split>)
    depth: DepthConfig = field(default_factory=DepthConfig)
    layered: LayeredDataConfig = field(default_factory=LayeredDataConfig)


@dataclass
class ClicksConfig:
    max_extra: int = 3  # training: 0..max_extra clicks simulated from the model's own predictions
    max_eval: int = 20  # evaluation: clicks per object
    target_iou: Optional[float] = None  # evaluation: stop an object at IoU >= target (isegm early stop); None = never
    min_eval: int = 1  # evaluation: clicks every object runs before the early stop may end it
    threshold: float = 0.49  # prediction = prob > threshold (isegm protocol)


class EvalResize(str, enum.Enum):
    """How evaluation maps an image to the square model input (``eval.resize``; docs/training.md)."""

    letterbox = "letterbox"  # longest side to model.input_size, top-left pad (our training transform)
    stretch = "stretch"  # the whole image to input_size x input_size, aspect ignored (SegNext)


@dataclass
class EvalConfig:
    max_objects: Optional[int] = None  # evaluate only the first N objects (None = all)
    feature_cache: Optional[str] = None  # folder of cached frozen-encoder features shared across rows (None = off)
    cache_max_gb: float = 20.0
    resize: EvalResize = EvalResize.letterbox
    zoom_in: bool = False  # RITM/SimpleClick ZoomIn: from click 2 the model sees (and encodes) a crop of the object
    # side of a zoom-in crop's input (None = model.input_size; a multiple of the patch size). The references use
    # RITM 400 (600 on DAVIS), longest side; SimpleClick 448 (672 on DAVIS), square.
    zoom_in_size: Optional[int] = None
    flip: bool = False  # RITM/SimpleClick: average with the mirrored image's logits (two encodings per image/crop)


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


@dataclass
class LoggerConfig:
    kind: LoggerKind = LoggerKind.wandb
    project: str = "ois_lightning"
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    name: Optional[str] = None


@dataclass
class Config:
    base: Optional[str] = None  # YAML file this one extends (relative to this file)
    name: str = "ois"
    table: Optional[str] = None  # ablation table this run belongs to (sweeps / `ois table`)
    row: Optional[str] = None
    seed: int = 0
    output_dir: str = "runs/${name}/seed${seed}"
    ckpt: Optional[str] = None  # model weights for `ois eval` (a Lightning .ckpt)
    ckpt_path: Optional[str] = None  # resume training: a .ckpt path, or "last" for <output_dir>/checkpoints/last.ckpt
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    clicks: ClicksConfig = field(default_factory=ClicksConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def read_yaml(path: Path) -> dict:
    """A YAML file whose top level is a mapping; :class:`ConfigError` naming the file otherwise."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _base_chain(path: Path) -> list[tuple[Path, dict]]:
    """Files from the root base to ``path`` itself; each may name its ``base:`` relative to itself."""
    chain: list[tuple[Path, dict]] = []
    seen: set[Path] = set()
    current: Optional[Path] = path
    while current is not None:
        current = current.resolve()
        if current in seen:
            raise ConfigError(f"{current}: circular base chain")
        seen.add(current)
        data = read_yaml(current)
        chain.append((current, data))
        base = data.get("base")
        if base is not None and not isinstance(base, str):
            raise ConfigError(f"{current}: key 'base' must be a file path, got {base!r}")
        if base is not None and not (current.parent / base).is_file():
            raise ConfigError(f"{current}: base file '{base}' not found (looked for {current.parent / base})")
        current = current.parent / base if base else None
    return chain[::-1]


def _merge(cfg: DictConfig, layer: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, layer)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        value = getattr(e, "value", None)
        if value is None and key != "?":
            value = OmegaConf.select(OmegaConf.create(layer), key, default=None)
        reason = str(e).splitlines()[0]
        raise ConfigError(f"{source}: bad key '{key}' (value {value!r}): {reason}") from None


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> DictConfig:
    """Schema defaults <- YAML base chain (root first) <- ``key=value`` overrides; validated and resolved."""
    cfg = OmegaConf.structured(Config)
    if path is not None:
        for file, data in _base_chain(Path(path)):
            data = {k: v for k, v in data.items() if k != "base"}
            cfg = _merge(cfg, data, str(file))
        cfg.base = str(Path(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"command line: override '{item}' is not of the form key=value")
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"command line '{item}'")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path or 'config'}: cannot resolve interpolation: {str(e).splitlines()[0]}") from None
    validate(cfg, str(path or "config"))
    return cfg


def validate(cfg: DictConfig, source: str = "config") -> None:
    """Cross-field checks that types alone cannot express."""
    m = cfg.model
    if m.fusion == FusionKind.dense_self_attention:  # SegNext-style baseline: dense map + self-attention only
        if not m.dense.enabled:
            raise ConfigError(f"{source}: model.fusion=dense_self_attention fuses the dense click map; "
                              "it needs model.dense.enabled=true")
        if m.sparse.enabled:
            raise ConfigError(f"{source}: model.fusion=dense_self_attention replaces the sparse click tokens (and "
                              "with them order/object attention); set model.sparse.enabled=false")
    if not m.sparse.enabled and not m.dense.enabled:
        raise ConfigError(
            f"{source}: model.sparse.enabled=false and model.dense.enabled=false leave no prompt path; enable one"
        )
    from .model.backbones import SPECS

    spec = SPECS.get(m.backbone.name)
    if spec is None:
        raise ConfigError(f"{source}: model.backbone.name={m.backbone.name!r} is not one of {', '.join(SPECS)}")
    if m.input_size % spec.patch_size != 0:
        raise ConfigError(f"{source}: model.input_size={m.input_size} must be a multiple of {m.backbone.name}'s "
                          f"patch size {spec.patch_size}")
    zoom = cfg.eval.zoom_in_size
    if zoom is not None and (zoom <= 0 or zoom % spec.patch_size != 0):
        raise ConfigError(f"{source}: eval.zoom_in_size={zoom} must be a positive multiple of {m.backbone.name}'s "
                          f"patch size {spec.patch_size} (or null for model.input_size)")
    if m.sparse.dim % m.sparse.num_heads != 0:
        raise ConfigError(f"{source}: model.sparse.dim={m.sparse.dim} not divisible by num_heads={m.sparse.num_heads}")
    c = cfg.clicks
    if c.target_iou is not None and not 0.0 < c.target_iou <= 1.0:
        raise ConfigError(f"{source}: clicks.target_iou={c.target_iou} must be in (0, 1], or null to run all "
                          f"clicks.max_eval clicks")
    if not 1 <= c.min_eval <= c.max_eval:
        raise ConfigError(f"{source}: clicks.min_eval={c.min_eval} must be in 1..clicks.max_eval={c.max_eval}")
    _validate_depth(cfg, source)


def uses_depth(model: Any) -> bool:
    """Whether the network of a ``model`` config reads a depth map: order-aware attention on the sparse tokens
    (Sec. 3.2) or the depth encoder (App. A.4). Depth is loaded, predicted and validated only then."""
    return bool((model.order.enabled and model.sparse.enabled) or model.depth_encoder.enabled)


def _validate_depth(cfg: DictConfig, source: str) -> None:
    """Depth encoder (Table 5), separate depth models (Table 6) and backbones without a depth head (MAE)."""
    m, d = cfg.model, cfg.data.depth
    if m.depth_encoder.enabled and m.order.enabled:
        raise ConfigError(
            f"{source}: model.depth_encoder.enabled=true runs with order-aware attention off (paper App. A.4); "
            "set model.order.enabled=false"
        )
    if m.depth_encoder.enabled and m.depth_encoder.dim % m.depth_encoder.num_heads != 0:
        raise ConfigError(f"{source}: model.depth_encoder.dim={m.depth_encoder.dim} not divisible by "
                          f"num_heads={m.depth_encoder.num_heads}")
    if d.model is not None:
        from .model.depth_models import depth_model_kind, depth_model_names

        if not uses_depth(m):
            raise ConfigError(f"{source}: data.depth.model={d.model} is unused: no part of the model reads depth "
                              "(model.order or model.sparse off, model.depth_encoder off); drop it")
        if d.model not in depth_model_names():
            raise ConfigError(f"{source}: data.depth.model={d.model!r} is not one of {depth_model_names()}")
        if d.source == DepthSource.gt:
            raise ConfigError(f"{source}: data.depth.model={d.model} is unused with data.depth.source=gt; drop one")
        if d.source == DepthSource.file and d.kind != depth_model_kind(d.model):
            raise ConfigError(
                f"{source}: data.depth.kind={d.kind} but data.depth.model={d.model} gives "
                f"'{depth_model_kind(d.model)}' maps; set data.depth.kind={depth_model_kind(d.model)}"
            )
    elif uses_depth(m) and d.source == DepthSource.model:
        from .model.backbones import SPECS

        if not SPECS[m.backbone.name].has_depth_head:
            raise ConfigError(
                f"{source}: model.backbone.name={m.backbone.name} has no depth head; set data.depth.model "
                "(e.g. dav2-vitb) or data.depth.source=file|gt"
            )


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def to_dict(cfg: DictConfig) -> dict:
    """Plain dict with enums as their values (for W&B, results.json)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]
