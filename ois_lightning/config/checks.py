"""Checks of a loaded config: every value against the tables of :mod:`ois_lightning.config.schema` (ranges, choices,
registries), relations between keys, random weights only on request, and a checkpoint's stored config against
the one it is evaluated with. Each problem is one :class:`ConfigError` line naming the layer, key and value."""
from __future__ import annotations

import math
import sys
from typing import Any, Callable, Collection, Iterator, Mapping, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..lit.strategies import COMMON as COMMON_STRATEGIES
from .allowed import CHOICES, NON_EMPTY, RANGES
from .schema import ConfigError, DepthSource, FusionKind, shared_schema_defaults, to_dict

Sources = Mapping[str, str]
Where = Callable[..., str]


def _backbones() -> Collection[str]:
    from ..model.specs import SPECS

    return SPECS


def _depth_models() -> Collection[str]:
    from ..model.specs import depth_model_names

    return depth_model_names()


def _datasets() -> Collection[str]:
    from ..data import DATASETS

    return DATASETS


def _networks() -> Collection[str]:
    return [*_backbones(), *_depth_models()]


def _cues() -> Collection[str]:
    from ..data.monocular import CUES

    return CUES


def _strategies() -> Collection[str]:
    from ..lit.strategies import strategy_names  # imports Lightning: only for a name outside COMMON_NAMES

    return strategy_names()


# keys whose values (list items, mapping keys) are names of a registry, looked up only when set
REGISTRIES: dict[str, Callable[[], Collection[str]]] = {
    "model.backbone.name": _backbones, "data.depth.model": _depth_models, "weights": _networks,
    "data.train": _datasets, "data.val": _datasets, "data.test": _datasets, "data.paths": _datasets,
    "train.strategy": _strategies, "data.layered.cues": _cues,
}
COMMON_NAMES: dict[str, Collection[str]] = {"train.strategy": COMMON_STRATEGIES}  # accepted without a lookup


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a nested mapping; lists and empty mappings are leaves."""
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, (Mapping, DictConfig)) and len(value):
            yield from leaves(value, name + ".")
        else:
            yield name, value


def check(cfg: DictConfig, sources: Sources, weights: bool = True) -> None:
    """Every check of a resolved config (``weights``: :func:`check_weights` too); the first problem raises."""
    where = _where(sources)
    _check_values(cfg, where)
    validate(cfg, where)
    if weights:
        check_weights(cfg, where)


def _where(sources: Sources) -> Where:
    """The layer that set ``keys`` (or a parent of one): of several, the latest to apply (``sources`` is in the
    order the layers set them); "default" for schema defaults."""
    order = {key: i for i, key in enumerate(sources)}

    def owner(key: str) -> Optional[str]:
        while key and key not in sources:
            key = key.rpartition(".")[0]
        return key or None

    def where(*keys: str) -> str:
        owners = [k for k in map(owner, keys) if k is not None]
        return sources[max(owners, key=order.__getitem__)] if owners else "default"
    return where


def _check_values(cfg: DictConfig, where: Where) -> None:
    """Empty strings and lists, then the RANGES, CHOICES and REGISTRIES tables."""
    for key, value in leaves(cfg):
        items = list(value) if isinstance(value, ListConfig) else [value]
        if any(isinstance(v, str) and not v.strip() for v in items):
            raise ConfigError(f"{where(key)}: {key}={value!r} is empty; give a value (or null where allowed)")
        if key in NON_EMPTY and not items:
            raise ConfigError(f"{where(key)}: {key}=[] is empty; list at least one name")
    for key, rng in RANGES.items():
        value = OmegaConf.select(cfg, key)
        if isinstance(value, float) and not math.isfinite(value):  # NaN compares false with every bound
            raise ConfigError(f"{where(key)}: {key}={value} must be a finite number {rng}")
        if value is not None and value not in rng:
            raise ConfigError(f"{where(key)}: {key}={value} must be {rng}")
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in choices:
            raise ConfigError(f"{where(key)}: {key}={value!r} is not one of {', '.join(choices)}")
    defaults = shared_schema_defaults()  # read only
    for key, registry in REGISTRIES.items():
        value = OmegaConf.select(cfg, key)
        if value is None or value == OmegaConf.select(defaults, key) or value in COMMON_NAMES.get(key, ()):
            continue
        names = list(value) if isinstance(value, (ListConfig, DictConfig)) else [value]
        known = registry()
        bad = next((n for n in names if n not in known), None)
        if bad is not None:
            shown = f"{value!r}" if bad == value else f"{value}: {bad!r}"
            raise ConfigError(f"{where(key)}: {key}={shown} is not one of {', '.join(known)}")
    _check_devices(cfg.train.devices, where)


def _check_devices(devices: Any, where: Where) -> None:
    """``train.devices``: auto, a count (-1 = all), a list of GPU indices or "0,1"."""
    items = list(devices) if isinstance(devices, ListConfig) else str(devices).split(",")
    ok = devices == "auto" or (isinstance(devices, int) and (devices >= 1 or devices == -1)) or (
        not isinstance(devices, int) and all(str(i).strip().isdigit() for i in items))
    if not ok:
        raise ConfigError(f"{where('train.devices')}: train.devices={devices!r} must be auto, a count >= 1, -1 "
                          "(all), a list of device indices or a string like '0,1'")


def _fail(where: Where, keys: tuple[str, ...], message: str) -> ConfigError:
    """The error of a relation between ``keys``, named by the layer that set the latest of them."""
    return ConfigError(f"{where(*keys)}: {message}")


def validate(cfg: DictConfig, where: Where = lambda *keys: "config") -> None:
    """Relations between keys that single values cannot express."""
    m, c = cfg.model, cfg.clicks
    if m.fusion == FusionKind.dense_self_attention and not m.dense.enabled:  # SegNext-style: dense map only
        raise _fail(where, ("model.fusion", "model.dense.enabled"), "model.fusion=dense_self_attention fuses the "
                    "dense click map; it needs model.dense.enabled=true")
    if m.fusion == FusionKind.dense_self_attention and m.sparse.enabled:
        raise _fail(where, ("model.fusion", "model.sparse.enabled"), "model.fusion=dense_self_attention replaces "
                    "the sparse click tokens (and with them order/object attention); set model.sparse.enabled=false")
    if not m.sparse.enabled and not m.dense.enabled:
        raise _fail(where, ("model.sparse.enabled", "model.dense.enabled"), "model.sparse.enabled=false and "
                    "model.dense.enabled=false leave no prompt path; enable one")
    from ..model.specs import SPECS

    patch = SPECS[m.backbone.name].patch_size
    if m.input_size % patch != 0:
        raise _fail(where, ("model.input_size", "model.backbone.name"), f"model.input_size={m.input_size} must be "
                    f"a multiple of {m.backbone.name}'s patch size {patch}")
    zoom = cfg.eval.zoom_in_size
    if zoom is not None and zoom % patch != 0:
        raise _fail(where, ("eval.zoom_in_size", "model.backbone.name"), f"eval.zoom_in_size={zoom} must be a "
                    f"positive multiple of {m.backbone.name}'s patch size {patch} (or null for model.input_size)")
    if m.sparse.dim % m.sparse.num_heads != 0:
        raise _fail(where, ("model.sparse.dim", "model.sparse.num_heads"), f"model.sparse.dim={m.sparse.dim} not "
                    f"divisible by num_heads={m.sparse.num_heads}")
    if c.min_eval > c.max_eval:
        raise _fail(where, ("clicks.min_eval", "clicks.max_eval"), f"clicks.min_eval={c.min_eval} must be in "
                    f"1..clicks.max_eval={c.max_eval}")
    _validate_depth(cfg, where)


def _validate_depth(cfg: DictConfig, where: Where) -> None:
    """Depth encoder (Table 5), separate depth models (Table 6) and backbones without a depth head (MAE)."""
    from ..model.inputs import uses_depth  # the model package imports torch: only when checking

    m, d, enc = cfg.model, cfg.data.depth, cfg.model.depth_encoder
    if enc.enabled and m.order.enabled:
        raise _fail(where, ("model.depth_encoder.enabled", "model.order.enabled"), "model.depth_encoder.enabled=true "
                    "runs with order-aware attention off (paper App. A.4); set model.order.enabled=false")
    if enc.enabled and enc.dim % enc.num_heads != 0:
        raise _fail(where, ("model.depth_encoder.dim", "model.depth_encoder.num_heads"), f"model.depth_encoder.dim="
                    f"{enc.dim} not divisible by num_heads={enc.num_heads}")
    if d.model is not None:
        from ..model.specs import depth_model_kind

        if not uses_depth(m):
            raise _fail(where, ("data.depth.model", "model"), f"data.depth.model={d.model} is unused: no part of "
                        "the model reads depth (model.order or model.sparse off, model.depth_encoder off); drop it")
        if d.source == DepthSource.gt:
            raise _fail(where, ("data.depth.model", "data.depth.source"), f"data.depth.model={d.model} is unused "
                        "with data.depth.source=gt; drop one")
        kind = depth_model_kind(d.model)
        if d.source == DepthSource.file and d.kind != kind:
            raise _fail(where, ("data.depth.kind", "data.depth.model"), f"data.depth.kind={d.kind} but "
                        f"data.depth.model={d.model} gives '{kind}' maps; set data.depth.kind={kind}")
    elif uses_depth(m) and d.source == DepthSource.model:
        from ..model.specs import SPECS

        if not SPECS[m.backbone.name].has_depth_head:
            raise _fail(where, ("model.backbone.name", "data.depth.source"), f"model.backbone.name={m.backbone.name} "
                        "has no depth head; set data.depth.model (e.g. dav2-vitb) or data.depth.source=file|gt")


def check_weights(cfg: DictConfig, where: Where) -> None:
    """A published network (frozen backbone other than ``tiny``, separate depth model) needs its weights file
    unless ``model.backbone.random_init`` asks for random weights."""
    b, d = cfg.model.backbone, cfg.data.depth
    how = "or model.backbone.random_init=true for a smoke test on random weights"
    if not b.random_init and b.name != "tiny" and b.freeze and b.checkpoint is None:
        raise _fail(where, ("model.backbone.checkpoint", "model.backbone.name"), "model.backbone.checkpoint=null "
                    f"leaves the frozen backbone model.backbone.name={b.name} randomly initialised; set "
                    f"model.backbone.checkpoint=/path/to/weights (or weights.{b.name} in experiments/local.yaml), "
                    f"{how}")
    if not b.random_init and d.model is not None and d.checkpoint is None:
        raise _fail(where, ("data.depth.checkpoint", "data.depth.model"), "data.depth.checkpoint=null leaves "
                    f"data.depth.model={d.model} randomly initialised; set data.depth.checkpoint=/path/to/weights "
                    f"(or weights.{d.model} in experiments/local.yaml), {how}")


# what a checkpoint's weights were trained for and how they are evaluated: must agree at `ois eval` (the data,
# depth maps included, may differ: e.g. a model trained on DAv2 depth evaluated with ZoeDepth maps, docs/backbones.md)
PROTOCOL_KEYS = ("model", "clicks", "eval.resize", "eval.zoom_in", "eval.zoom_in_size", "eval.flip")
NOT_PROTOCOL = ("model.backbone.checkpoint", "model.backbone.random_init",  # machine paths, weights in the ckpt
                "model.backbone.freeze", "clicks.max_extra",  # training only
                "clicks.target_iou", "clicks.min_eval")  # when an object stops, not how its clicks are placed or read


def config_mismatch(stored: Mapping[str, Any], cfg: DictConfig) -> list[tuple[str, Any, Any]]:
    """(key, stored value, given value) for every protocol key the checkpoint's saved config sets otherwise;
    keys the checkpoint does not store (older runs) are not compared."""
    given = dict(leaves(to_dict(cfg)))
    return [(key, old, given[key]) for key, old in leaves(stored)
            if any(key == p or key.startswith(p + ".") for p in PROTOCOL_KEYS) and key not in NOT_PROTOCOL
            and key in given and given[key] != old]


def check_checkpoint_config(stored: Optional[Mapping[str, Any]], cfg: DictConfig) -> None:
    """ConfigError listing the protocol keys where ``cfg`` differs from the checkpoint's saved config (Lightning's
    ``hyper_parameters``); with ``eval.allow_config_mismatch=true`` the same list is a warning on stderr."""
    diffs = config_mismatch(stored or {}, cfg)
    if not diffs:
        return
    text = f"ckpt={cfg.ckpt} was trained with " + ", ".join(f"{k}={old} (evaluated with {new})"
                                                             for k, old, new in diffs)
    if not cfg.eval.allow_config_mismatch:
        raise ConfigError(f"{text}; set them as in training, or eval.allow_config_mismatch=true to evaluate anyway")
    print(f"ois: warning: {text}", file=sys.stderr)
